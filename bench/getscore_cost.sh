#!/usr/bin/env bash
# The server's instructions per cached GetScore under callgrind (valgrind),
# 64 calls in flight (4 connections x 16 streams; ONE=1: one call in flight
# on one connection) from a C client (h2load,
# Debian package nghttp2-client), so the load generator's own cost is not
# in the figure. Deterministic: the same for the same binary whatever else
# the machine is doing (within 1%: background followers also run), so it
# compares builds where wall-clock figures on these machines cannot.
#
# Usage: bench/getscore_cost.sh BINARY DATABASE_URL [CALLS]
# The database must hold scored customers (`patron bench scores` seeds
# one); REDIS_URL is used if set. Port 50990 must be free. NEAR_TTL_MS=0
# turns the in-process tier off, so Redis serves every read.
set -euo pipefail
bin=$1 db=$2 calls=${3:-5000}
addr=127.0.0.1:50990
url=http://$addr/patron.scoring.v1.ScoringService/GetScore
# A server already there would answer uninstrumented (and the figure be 0).
if (exec 3<>"/dev/tcp/127.0.0.1/50990") 2>/dev/null; then
  echo "port 50990 is in use; stop what listens there first" >&2; exit 1
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# One customer's GetScoreRequest as a gRPC frame (the near tier serves it).
id=$(psql -At "$db" -c "select customer_id from scoring_scores limit 1")
python3 - "$id" "$work/request" <<'PY'
import struct, sys
i = sys.argv[1].encode()
msg = b"\x0a" + bytes([len(i)]) + i
open(sys.argv[2], "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
PY
h2() { h2load -d "$work/request" -H 'content-type: application/grpc' -H 'te: trailers' "$@" "$url"; }
serve() {
  PATRON_CACHE__NEAR_TTL_MS=${NEAR_TTL_MS:-600000} DATABASE_URL=$db "$@" serve --addr $addr >"$work/log" 2>&1 &
  for _ in $(seq 120); do
    [[ $(h2 -n 10 -c 1 2>/dev/null || true) == *"10 succeeded"* ]] && return
    sleep 1
  done
  echo "server did not answer" >&2; exit 1
}

# Instructions: only the measured calls are instrumented.
serve valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg" "$bin"
vg=$!
load=(-c 4 -m 16)
[[ ${ONE:-0} == 1 ]] && load=(-c 1 -m 1)
h2 -n 2000 "${load[@]}" >/dev/null
callgrind_control -i on $vg >/dev/null 2>&1
[[ $(h2 -n "$calls" "${load[@]}") == *"$calls succeeded"* ]] || { echo "calls failed" >&2; exit 1; }
callgrind_control -i off $vg >/dev/null 2>&1
callgrind_control -d $vg >/dev/null 2>&1
kill $vg; wait $vg 2>/dev/null || true
ir=$(cat "$work"/cg* | awk '/^totals:/ {s += $2} END {print s}')
echo "instructions per GetScore (server): $((ir / calls))"
