#!/usr/bin/env bash
# Throughput of keydesk's cached users list beside nginx serving the very same
# HTML as a static file, in one run on this machine: `wrk -c32` against each,
# alternating keydesk/nginx, REPS times (default 3), medians printed.
#
#   benches/vs-nginx.sh                 # builds target/release/keydesk if missing
#   KEYDESK_BIN=path/to/keydesk REPS=5 DURATION=10s benches/vs-nginx.sh
#
# keydesk runs as `keydesk demo` (in-process fake Vultr, 100 users seeded by
# the demo, the fixed demo identity) with a cache TTL of an hour, so every
# request is served from the cache: the figure is keydesk's own cost per page
# (identity, policy, render, headers, limiter, metrics), never the upstream's.
# wrk sends whatever cookie the demo set, as a browser would (the demo's users
# list sets none today, so no request reads a session).
# nginx runs with as many workers as cores and no access log (its best case).
# Needs: apt-get install wrk nginx-light curl. Both servers and wrk share the
# machine's cores, as a single-host deployment would.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
reps=${REPS:-3}
duration=${DURATION:-10s}
conns=${CONNECTIONS:-32}
bin=${KEYDESK_BIN:-target/release/keydesk}
for tool in wrk nginx curl python3; do
  command -v "$tool" >/dev/null || { echo "vs-nginx: $tool is missing (apt-get install wrk nginx-light curl)" >&2; exit 1; }
done
if [ ! -x "$bin" ]; then
  echo "building $bin …" >&2
  cargo build --release --locked >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/keydesk-vs-nginx.XXXXXX")
kport=$((20000 + RANDOM % 10000))
nport=$((kport + 1))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

RUST_LOG=warn "$bin" demo --listen "127.0.0.1:$kport" --cache-ttl 3600 >"$work/keydesk.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$kport/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$kport/healthz" >/dev/null || { echo "keydesk did not start: $(cat "$work/keydesk.log")" >&2; exit 1; }

# A browser's visit: it gets its session cookie, then the page (warming the cache).
mkdir -p "$work/www"
curl -sf -c "$work/jar" -o /dev/null "http://127.0.0.1:$kport/users"
cookie=$(awk '{ sub(/^#HttpOnly_/, "") } !/^#/ && NF >= 7 { printf "%s%s=%s", sep, $6, $7; sep = "; " }' "$work/jar")
curl -sf -b "$work/jar" -o "$work/www/users.html" "http://127.0.0.1:$kport/users"
grep -q "<table" "$work/www/users.html" || { echo "the users page has no table: $(head -c 400 "$work/www/users.html")" >&2; exit 1; }
bytes=$(wc -c <"$work/www/users.html")

cat >"$work/nginx.conf" <<EOF
worker_processes $(nproc);
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/tmp;
  proxy_temp_path $work/tmp;
  fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp;
  scgi_temp_path $work/tmp;
  server {
    listen 127.0.0.1:$nport;
    location = /users {
      default_type text/html;
      alias $work/www/users.html;
    }
  }
}
EOF
mkdir -p "$work/tmp"
# nginx's workers run as an unprivileged user: they must read the page.
chmod 755 "$work" "$work/www"
chmod 644 "$work/www/users.html"
nginx -c "$work/nginx.conf" -p "$work"
for _ in $(seq 1 50); do
  curl -sf -o /dev/null "http://127.0.0.1:$nport/users" && break
  sleep 0.1
done
cmp -s <(curl -sf "http://127.0.0.1:$nport/users") "$work/www/users.html" || { echo "nginx does not serve the page" >&2; exit 1; }

# wrk's summary line: "Requests/sec:  12345.67".
# A run with any non-2xx answer (an error page is cheaper than the page) fails.
rate() {
  local out
  out=$(wrk -t2 -c"$conns" -d"$duration" -H "Cookie: $cookie" "$1")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "vs-nginx: $1 answered non-2xx: $out" >&2
    exit 1
  fi
  awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}
rate "http://127.0.0.1:$kport/users" >/dev/null # warm up both
rate "http://127.0.0.1:$nport/users" >/dev/null
: >"$work/rates"
for rep in $(seq 1 "$reps"); do
  echo "run $rep/$reps" >&2
  echo "keydesk $(rate "http://127.0.0.1:$kport/users")" >>"$work/rates"
  echo "nginx $(rate "http://127.0.0.1:$nport/users")" >>"$work/rates"
done
# wrk refused non-2xx above; the page itself may differ per render.
curl -sf -b "$work/jar" "http://127.0.0.1:$kport/users" | cmp -s - "$work/www/users.html" || echo "note: the page changed during the run (a timestamp?)" >&2
python3 - "$work/rates" "$bytes" "$conns" "$duration" "$reps" <<'PY'
import statistics, sys
path, size, conns, duration, reps = sys.argv[1:]
rates = {}
for line in open(path):
    who, value = line.split()
    rates.setdefault(who, []).append(float(value))
k, n = statistics.median(rates["keydesk"]), statistics.median(rates["nginx"])
print(f"GET /users ({size} bytes of HTML), wrk -t2 -c{conns} -d{duration}, median of {reps}")
print("| server | requests/s (each run) | median |")
print("|---|---|---|")
for who in ("keydesk", "nginx"):
    runs = ", ".join(f"{r:,.0f}" for r in rates[who])
    print(f"| {who} | {runs} | {statistics.median(rates[who]):,.0f} |")
print(f"\nkeydesk / nginx = **{k / n:.2f}×** (target ≥ 0.5×)")
PY
