#!/usr/bin/env bash
# CPU per cached GetScore, server, load generator and Redis, during the
# 64-in-flight window of `patron bench scores` (perf stat task-clock on each
# process for 4 s), beside that run's figures. Run old and new builds
# alternately: on these shared machines a single wall-clock figure varies
# by up to 1.5x.
#
# Usage: bench/getscore_cpu.sh PATRON_BINARY TAG [PORT]
# A server must be listening on 127.0.0.1:PORT (default 50990) with the
# customers of an earlier `patron bench scores` run (TAG is the tag it
# printed). Needs perf (Debian package linux-perf).
set -euo pipefail
bin=$1 tag=$2 port=${3:-50990}
out=$(mktemp)
trap 'rm -f "$out" "$out".server "$out".generator "$out".redis' EXIT
server=$(pgrep -f "serve --addr 127.0.0.1:$port" | head -1)
[[ -n $server ]] || { echo "no server on port $port" >&2; exit 1; }
"$bin" bench scores --reuse "$tag" --seconds 5 --endpoint "http://127.0.0.1:$port" >"$out" 2>&1 &
generator=$!
until grep -q "GetScore, 1 in flight" "$out"; do
  kill -0 $generator 2>/dev/null || { cat "$out" >&2; exit 1; }
  sleep 0.05
done
sleep 0.5 # into the 64-in-flight window
redis=$(pgrep -x redis-server | head -1)
perf stat -e task-clock -p "$server" -- sleep 4 2>"$out.server" &
perf stat -e task-clock -p "${redis:-$server}" -- sleep 4 2>"$out.redis" &
perf stat -e task-clock -p "$generator" -- sleep 4 2>"$out.generator"
wait %2 %3 2>/dev/null || true
wait $generator
line=$(grep "GetScore, 64" "$out")
echo "$line"
msec() { awk '/task-clock/ {gsub(",", "", $1); print $1}' "$1"; }
python3 - "$line" "$(msec "$out.server")" "$(msec "$out.generator")" "${redis:+$(msec "$out.redis")}" <<'PY'
import re, sys
rate = float(re.search(r"= (\d+) calls/s", sys.argv[1]).group(1))
for name, ms in (("server", sys.argv[2]), ("generator", sys.argv[3]), ("redis", sys.argv[4])):
    if not ms:
        continue
    ms = float(ms)
    print(f"{name}: {ms / 4000:.2f} cores, {ms * 1000 / 4 / rate:.1f} us of CPU per call")
PY
