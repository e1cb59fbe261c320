#!/usr/bin/env bash
# Builds the previous release of keydesk, for the rolling-upgrade test
# (tests/rolling.rs), and prints the path of its binary.
#
# "The previous release" is the newest release section of CHANGELOG.md
# (`## [X.Y.Z] - date`, not `## [Unreleased]`) whose version differs from
# Cargo.toml's `version` (while Cargo.toml still names the newest release,
# HEAD is unreleased work after it: that release); its commit is the first
# backticked 7-40 digit hex string in that section. A commit missing from
# the clone is built from .ci/releases/VERSION-COMMIT.tar.gz when present, else fails the script (a shallow clone needs `git fetch --unshallow`). The commit is checked out, detached, in a git
# worktree under target/previous-release/src and built with
# `cargo build --release --locked` into this checkout's target dir (so the
# compiled dependencies are shared and only keydesk itself rebuilds); the
# binary is copied to target/previous-release/keydesk and its deploy/ (the
# grants the test applies as that release's deployment did) beside it.
#
# The shared target dir means target/release/keydesk is overwritten by the
# previous release: build HEAD's release binary after this script.
#
# Usage: .ci/previous-release.sh   (prints the binary's absolute path on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd -P)"

die() {
  echo "previous-release: $*" >&2
  exit 1
}

# The version this checkout builds: the first `version = "…"` of [package].
current="$(awk '
  /^\[package\]/ { in_pkg = 1; next }
  /^\[/ { in_pkg = 0 }
  in_pkg && /^version[[:space:]]*=/ { gsub(/^version[[:space:]]*=[[:space:]]*"|".*$/, ""); print; exit }
' Cargo.toml)"
[ -n "$current" ] || die "no version in Cargo.toml's [package]"

# Every release section (`## [X.Y.Z] - date`, newest first as CHANGELOG.md
# lists them) as "version commit" lines; "-" for a section naming no commit.
releases="$(awk '
  function flush() { if (version != "") print version, (commit == "" ? "-" : commit) }
  /^## \[/ {
    flush()
    v = $0
    sub(/^## \[/, "", v)
    sub(/\].*$/, "", v)
    version = (v ~ /^[0-9]+\.[0-9]+\.[0-9]+/) ? v : ""
    commit = ""
    next
  }
  version != "" && commit == "" {
    line = $0
    while (match(line, /`[0-9a-f]+`/)) {
      h = substr(line, RSTART + 1, RLENGTH - 2)
      line = substr(line, RSTART + RLENGTH)
      if (length(h) >= 7 && length(h) <= 40) { commit = h; break }
    }
  }
  END { flush() }
' CHANGELOG.md)"
[ -n "$releases" ] || die "CHANGELOG.md has no release section (## [X.Y.Z] - date)"
# The newest release that is not this version. Until Cargo.toml is bumped
# past the newest release (HEAD is unreleased work after it), that release
# itself is the previous one.
read -r version commit < <(echo "$releases" | awk -v current="$current" '$1 != current { print; exit }') || true
if [ -z "${version:-}" ]; then
  read -r version commit < <(echo "$releases" | head -n 1)
  echo "previous-release: Cargo.toml still says $version, CHANGELOG.md's newest release: HEAD is unreleased work after it" >&2
fi
[ "$commit" != "-" ] || die "CHANGELOG.md's section for $version names no commit (a \`hex\` of 7 to 40 digits)"

out="$root/target/previous-release"
src="$out/src"
mkdir -p "$out"
# The release's sources, kept in the repository (.ci/releases/VERSION-COMMIT.tar.gz,
# `git archive` of that commit): used when the clone lacks the commit (a
# shallow clone), so CI needs no history.
archive="$root/.ci/releases/$version-$commit.tar.gz"

if full="$(git rev-parse --verify --quiet "${commit}^{commit}")"; then
  echo "previous-release: $version is commit $full (this checkout is $current)" >&2
  # A worktree already at this commit and unchanged is reused (its files keep
  # their times, so cargo finds the build fresh); any other is stale: removed.
  if [ -e "$src/.git" ] \
    && [ "$(git -C "$src" rev-parse HEAD 2>/dev/null)" = "$full" ] \
    && [ -z "$(git -C "$src" status --porcelain 2>/dev/null)" ]; then
    echo "previous-release: reusing the worktree $src" >&2
  else
    if [ -e "$src" ] || git worktree list --porcelain | grep -qxF "worktree $src"; then
      echo "previous-release: removing the stale worktree $src" >&2
      git worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
    fi
    git worktree prune
    git worktree add --detach --force "$src" "$full" >&2
  fi
elif [ -f "$archive" ]; then
  echo "previous-release: commit $commit is not in this clone; building $version from $archive" >&2
  if [ ! -f "$src/.from-archive" ] || [ "$(cat "$src/.from-archive")" != "$commit" ]; then
    git worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
    git worktree prune
    mkdir -p "$src"
    tar -xzf "$archive" -C "$src"
    echo "$commit" > "$src/.from-archive"
  fi
else
  if [ "$(git rev-parse --is-shallow-repository)" = "true" ]; then
    die "commit $commit (release $version, from CHANGELOG.md) is not in this clone and $archive is missing: it is shallow; run git fetch --unshallow (or clone with full history)"
  fi
  die "commit $commit (release $version, from CHANGELOG.md) is not in this clone and $archive is missing; fetch it (git fetch origin) or correct CHANGELOG.md"
fi

target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$root/$target_dir" ;;
esac
echo "previous-release: cargo build --release --locked (CARGO_TARGET_DIR=$target_dir)" >&2
start=$(date +%s)
(cd "$src" && CARGO_TARGET_DIR="$target_dir" cargo build --release --locked >&2)
echo "previous-release: built $version in $(($(date +%s) - start)) s" >&2

cp "$target_dir/release/keydesk" "$out/keydesk.tmp"
mv "$out/keydesk.tmp" "$out/keydesk"
# Its deployment files (the grants it applies), beside the binary.
rm -rf "$out/deploy"
cp -R "$src/deploy" "$out/deploy"
echo "$out/keydesk"
