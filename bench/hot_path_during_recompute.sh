#!/bin/bash
# GetScore and BatchGetScores while a full recompute runs (BENCHMARKS.md,
# session 18). Needs the 1M database seeded by `patron bench scores`
# (its tag) and a server on it:
#
#   bench/hot_path_during_recompute.sh TAG [ENDPOINT] [PATRON]
#
# Starts `patron bench scores --reuse TAG` (which fits and recomputes, then
# measures for 10 s each: the floor, GetScore 1 in flight, GetScore 64 in
# flight, BatchGetScores) and starts another `patron score recompute` as
# soon as the 1-in-flight figure is printed, so the recompute overlaps the
# 64-in-flight measurement and the batch one after it.
set -euo pipefail
tag=$1
endpoint=${2:-http://127.0.0.1:50980}
patron=${3:-target/release/patron}
log=$(mktemp)
"$patron" bench scores --reuse "$tag" --endpoint "$endpoint" > "$log" 2>&1 &
bench=$!
until grep -q "GetScore, 1 in flight" "$log"; do
    kill -0 "$bench" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.2
done
sleep 1
start=$(date +%s.%N)
"$patron" score recompute --endpoint "$endpoint" > /dev/null
echo "recompute took $(echo "$(date +%s.%N) - $start" | bc) s"
wait "$bench"
grep -E "GetScore, 64|BatchGetScores" "$log"
rm -f "$log"
