#!/usr/bin/env bash
# The scoring feed consumer's cost per purchase, from its debug log.
#
#   bench/consumer_cost.sh PATRON_BINARY [online]
#
# Starts `patron serve` on a fresh PostgreSQL database (port 50981, Redis
# prefix `consumer-cost:`), runs `patron bench ingest --customers 10000
# --transactions 300000`, waits until the consumer has applied nothing for
# 5 s, and sums the `apply_ms` / `rescore_ms` of its `read model batch
# applied` lines. With `online`, 30,000 purchases are ingested and recomputed
# first, so online scoring rescores every buyer of the measured 300,000 (the
# usual state of a deployment); without, nobody has a baseline yet.
# Needs PostgreSQL and Redis on 127.0.0.1 (createdb, dropdb) and python3.
set -euo pipefail
bin=$1 mode=${2:-}
db=patron_consumer_cost_$$ endpoint=http://127.0.0.1:50981 log=$(mktemp)
createdb -h 127.0.0.1 -U root "$db"
DATABASE_URL=postgres://root@127.0.0.1:5432/$db REDIS_URL=redis://127.0.0.1:6379 \
  PATRON_REDIS__KEY_PREFIX=consumer-cost: RUST_LOG=info,patron_scoring=debug \
  "$bin" serve --addr 127.0.0.1:50981 > "$log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; dropdb -h 127.0.0.1 -U root "$db"; rm -f "$log"; }
trap cleanup EXIT
sleep 4
applied() { grep -c 'read model batch applied' "$log" || true; }
settle() {
  local last=-1 n
  while n=$(applied); [ "$n" != "$last" ]; do last=$n; sleep 5; done
}
if [ "$mode" = online ]; then
  "$bin" bench ingest --customers 10000 --transactions 30000 --endpoint $endpoint > /dev/null
  settle
  "$bin" score recompute --endpoint $endpoint > /dev/null
  sleep 3
fi
skip=$(applied)
"$bin" bench ingest --customers 10000 --transactions 300000 --endpoint $endpoint | tail -n 1
settle
python3 - "$log" "$skip" <<'PY'
import json, sys
purchases = apply_ms = rescore_ms = seen = 0
for line in open(sys.argv[1]):
    if "read model batch applied" not in line:
        continue
    seen += 1
    if seen <= int(sys.argv[2]):
        continue
    j = json.loads(line)
    purchases += j.get("purchases", 0)
    apply_ms += j.get("apply_ms", 0)
    rescore_ms += j.get("rescore_ms", 0)
per_k = lambda ms: 1000 * ms / max(purchases, 1)
print(f"{purchases} purchases: apply {apply_ms} ms ({per_k(apply_ms):.1f} ms per 1,000), "
      f"rescore {rescore_ms} ms ({per_k(rescore_ms):.1f} ms per 1,000), "
      f"{(apply_ms + rescore_ms) / 1000:.1f} s in all")
PY
