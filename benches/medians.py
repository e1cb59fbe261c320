"""Medians of the bench tables written by benches/compare.sh.

Each run's output has markdown tables; a row is identified by its non-numeric
leading cells (store, concurrency), and every cell holding "X ms" or
"X / Y ms" is replaced by the median over the repetitions. The baseline and
the new rows are printed one above the other."""
import re
import statistics
import sys

work, reps, base_rev, new_rev = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
NUM = re.compile(r"(\d+(?:\.\d+)?)")


def tables(path):
    """{heading: (header_row, {row_key: [cells]})}, in order."""
    out, heading = {}, None
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("## "):
            heading = line[3:]
            out[heading] = [None, {}]
        elif line.startswith("|") and heading:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set(line) <= set("|-"):
                continue
            if out[heading][0] is None:
                out[heading][0] = cells
                continue
            key = tuple(c for c in cells if "ms" not in c)
            out[heading][1][key] = cells
    return out


def median_cells(rows):
    """Cell-wise median over repetitions; numbers inside 'a / b ms' too."""
    first = rows[0]
    merged = []
    for i, cell in enumerate(first):
        if "ms" not in cell:
            merged.append(cell)
            continue
        numbers = [list(map(float, NUM.findall(r[i].replace("*", "")))) for r in rows]
        meds = [statistics.median(col) for col in zip(*numbers)]
        text, k = cell.replace("*", ""), iter(meds)
        merged.append(NUM.sub(lambda _: f"{next(k):.2f}", text))
    return merged


runs = {side: [tables(f"{work}/{side}-{r}.md") for r in range(1, reps + 1)] for side in ("base", "new")}
print(f"# Side by side: baseline {base_rev} vs {new_rev}, medians of {reps} runs each (alternating)\n")
for heading, (header, rows) in runs["new"][0].items():
    print(f"## {heading}\n")
    print("| code | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    for key in rows:
        for side, rev in (("base", base_rev), ("new", new_rev)):
            got = [run.get(heading, [None, {}])[1].get(key) for run in runs[side]]
            got = [g for g in got if g]
            if not got:
                print(f"| {rev} | " + " | ".join(key) + " | (no such row) |")
                continue
            print(f"| {rev} | " + " | ".join(median_cells(got)) + " |")
    print()
