#!/usr/bin/env bash
# Side by side, in one run: the `latency` and `store` scenarios of
# benches/keydesk.rs, built against a baseline revision and against a new one
# (default HEAD), alternating base/new, 3 repetitions each; medians printed by
# benches/medians.py. Both sides are built from git worktrees, each with the
# new revision's benches/keydesk.rs and benches/support/ copied in, so both
# run exactly the same scenario code against their own keydesk; uncommitted
# changes are not measured.
#
#   benches/compare.sh d6004b8            # baseline revision, new = HEAD
#   REPS=5 benches/compare.sh HEAD~3 HEAD
#
# PostgreSQL rows need KEYDESK_BENCH_DATABASE_URL or the tests' cluster
# (run `cargo test` once first); without one they are left out, and said so.
set -euo pipefail
base_rev=${1:?usage: benches/compare.sh BASE_REVISION [NEW_REVISION]}
new_rev=$(git rev-parse --short "${2:-HEAD}")
reps=${REPS:-3}
root=$(git rev-parse --show-toplevel)
cd "$root"
work=$(mktemp -d "${TMPDIR:-/tmp}/keydesk-compare.XXXXXX")
cleanup() {
  git worktree remove --force "$work/base" >/dev/null 2>&1 || true
  git worktree remove --force "$work/new" >/dev/null 2>&1 || true
}
trap cleanup EXIT
for side in base new; do
  rev=$base_rev; [ "$side" = new ] && rev=$new_rev
  git worktree add --detach "$work/$side" "$rev" >/dev/null
  mkdir -p "$work/$side/benches/support"
  git show "$new_rev:benches/keydesk.rs" >"$work/$side/benches/keydesk.rs"
  git show "$new_rev:benches/support/mod.rs" >"$work/$side/benches/support/mod.rs"
done

# One shared target directory: dependencies are compiled once for both.
bench_binary() { # $1: checkout
  (cd "$1" && CARGO_TARGET_DIR="$root/target" cargo bench --bench keydesk --no-run --message-format=json 2>/dev/null) |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="keydesk" and "bench" in m["target"]["kind"] and m.get("executable"):
        print(m["executable"])' | tail -1
}
for side in base new; do
  echo "building $side …" >&2
  bin=$(bench_binary "$work/$side")
  [ -n "$bin" ] || { echo "building $side failed" >&2; exit 1; }
  cp "$bin" "$work/bench-$side"
done

for rep in $(seq 1 "$reps"); do
  for side in base new; do
    echo "run $rep/$reps: $side" >&2
    "$work/bench-$side" latency store >"$work/$side-$rep.md"
  done
done
python3 benches/medians.py "$work" "$reps" "$base_rev" "$new_rev"
