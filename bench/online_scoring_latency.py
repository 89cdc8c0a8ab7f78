"""How long a new purchase takes to show in GetScore while the server is busy.

Online scoring rescores a customer as soon as a purchase reaches scoring's
read model; the issue asks for that within one second of the write. This
measures what a caller sees: against a server seeded by `patron bench scores`
(BENCHMARKS.md), it runs a command (by default `patron score recompute`: a
full recompute replaces the score table in one transaction at the end, and
other score writes wait for part of it) and, until it ends, buys one item
for a random customer every PERIOD seconds and polls GetScore until that
customer's frequency counts the purchase. Between purchases it reads the
earlier probes' customers again: a purchase that showed must not disappear
(the recompute's older score replacing the online one in the cache).

    python3 bench/online_scoring_latency.py DATABASE_URL ENDPOINT [PATRON] [PERIOD] [-- COMMAND...]

e.g. under an ingestion load instead of a recompute:

    python3 bench/online_scoring_latency.py DATABASE_URL http://127.0.0.1:50980 \
        target/release/patron 0.2 -- target/release/patron bench ingest \
        --transactions 2000000 --endpoint http://127.0.0.1:50980

Needs: pip install grpcio grpcio-tools googleapis-common-protos psycopg2-binary
"""
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psycopg2
from grpc_tools import protoc

args, command = sys.argv[1:], None
if "--" in args:
    args, command = args[:args.index("--")], args[args.index("--") + 1:]
DATABASE_URL, ENDPOINT = args[0], args[1]
PATRON = args[2] if len(args) > 2 else "target/release/patron"
PERIOD = float(args[3]) if len(args) > 3 else 0.2
command = command or [PATRON, "score", "recompute", "--endpoint", ENDPOINT]

# Python stubs generated from the repository's proto/, as any client would.
proto_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
out = tempfile.mkdtemp()
import grpc_tools
well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
for f in ["patron/common/v1/common.proto", "patron/profile/v1/profile.proto",
          "patron/scoring/v1/scoring.proto", "google/type/date.proto"]:
    if protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}",
                    f"--grpc_python_out={out}", os.path.join(proto_dir, f)]) != 0:
        sys.exit(f"protoc failed on {f}")
sys.path.insert(0, out)
import grpc  # noqa: E402
from patron.common.v1 import common_pb2  # noqa: E402
from patron.profile.v1 import profile_pb2, profile_pb2_grpc  # noqa: E402
from patron.scoring.v1 import scoring_pb2, scoring_pb2_grpc  # noqa: E402

with psycopg2.connect(DATABASE_URL) as conn, conn.cursor() as cur:
    cur.execute("SELECT customer_id FROM scoring_scores TABLESAMPLE SYSTEM (1) LIMIT 2000")
    ids = [r[0] for r in cur.fetchall()]
channel = grpc.insecure_channel(ENDPOINT.removeprefix("http://"))
profile = profile_pb2_grpc.CustomerProfileServiceStub(channel)
scoring = scoring_pb2_grpc.ScoringServiceStub(channel)


def frequency(customer):
    return scoring.GetScore(scoring_pb2.GetScoreRequest(customer_id=customer)).rfm.frequency


bought = {}  # customer -> the frequency GetScore showed after the purchase
went_back = []


def recheck():
    for customer, shown in bought.items():
        now = frequency(customer)
        if now < shown:
            went_back.append((time.monotonic() - start, customer, shown, now))


def probe():
    """Seconds from RecordTransactions returning to GetScore counting it."""
    customer = random.choice(ids)
    before = frequency(customer)
    txn = profile_pb2.Transaction(
        id=str(uuid.uuid4()), customer_id=customer,
        amount=common_pb2.Money(currency_code="EUR", units=10), channel="web",
        product_id="p-online", category="probe", quantity=1, region="north")
    txn.occurred_at.GetCurrentTime()
    profile.RecordTransactions(profile_pb2.RecordTransactionsRequest(transactions=[txn]))
    written = time.monotonic()
    while (shown := frequency(customer)) <= before:
        if time.monotonic() - written > 120:
            return float("inf")
        time.sleep(0.01)
    bought[customer] = shown
    return time.monotonic() - written


start = time.monotonic()
load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
load_output = []
done = threading.Event()
threading.Thread(target=lambda: (load_output.extend(load.stdout), load.wait(), done.set()),
                 daemon=True).start()
probes = []
while not done.is_set():
    at = time.monotonic() - start
    probes.append((at, probe()))
    recheck()
    time.sleep(PERIOD)
took = time.monotonic() - start
recheck()
lat = sorted(p[1] for p in probes)
print(f"{' '.join(command[:3])} took {took:.2f} s (rc {load.returncode}); {len(lat)} purchases during it")
print("".join(load_output[-3:]), end="")
for at, seconds in probes:
    if seconds > 0.5:
        print(f"  bought at +{at:.2f} s: visible after {seconds:.3f} s")
print(f"visible after: median {lat[len(lat) // 2] * 1000:.0f} ms, "
      f"max {lat[-1] * 1000:.0f} ms, over 1 s: {sum(s > 1 for s in lat)}")
print(f"purchases that showed and then disappeared again: {len({c for _, c, _, _ in went_back})} "
      f"of {len(bought)} customers ({len(went_back)} reads)")
for at, customer, shown, now in went_back[:10]:
    print(f"  +{at:.2f} s {customer}: frequency {now} after {shown}")
