#!/usr/bin/env bash
# Side by side, in one run: the `latency` and `store` scenarios of
# benches/keydesk.rs built against a baseline commit and against this
# checkout, alternating base/new, 3 repetitions each; medians printed by
# benches/medians.py. The baseline is built from a git worktree with this
# checkout's benches/keydesk.rs and benches/support/ copied in, so both
# sides run exactly the same scenario code against their own keydesk.
#
#   benches/compare.sh d6004b8            # baseline commit (any git revision)
#   REPS=5 benches/compare.sh HEAD~3
#
# PostgreSQL rows need KEYDESK_BENCH_DATABASE_URL or the tests' cluster
# (run `cargo test` once first); without one they are left out, and said so.
set -euo pipefail
base_rev=${1:?usage: benches/compare.sh BASE_REVISION}
reps=${REPS:-3}
root=$(git rev-parse --show-toplevel)
cd "$root"
work=$(mktemp -d "${TMPDIR:-/tmp}/keydesk-compare.XXXXXX")
git worktree add --detach "$work/base" "$base_rev" >/dev/null
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true' EXIT
mkdir -p "$work/base/benches/support"
cp benches/keydesk.rs "$work/base/benches/"
cp benches/support/mod.rs "$work/base/benches/support/"

# One shared target directory: dependencies are compiled once for both.
bench_binary() { # $1: checkout
  (cd "$1" && CARGO_TARGET_DIR="$root/target" cargo bench --bench keydesk --no-run --message-format=json 2>/dev/null) |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="keydesk" and "bench" in m["target"]["kind"] and m.get("executable"):
        print(m["executable"])' | tail -1
}
echo "building the baseline ($base_rev) …" >&2
base_bin=$(bench_binary "$work/base"); cp "$base_bin" "$work/bench-base"
echo "building this checkout ($(git rev-parse --short HEAD)$(git diff --quiet || echo +changes)) …" >&2
new_bin=$(bench_binary "$root"); cp "$new_bin" "$work/bench-new"

for rep in $(seq 1 "$reps"); do
  for side in base new; do
    echo "run $rep/$reps: $side" >&2
    "$work/bench-$side" latency store >"$work/$side-$rep.md"
  done
done
python3 benches/medians.py "$work" "$reps" "$base_rev" "$(git rev-parse --short HEAD)"
