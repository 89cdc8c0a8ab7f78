"""Full recompute, Patron beside pandas, in one run on the same database.

Run after `patron bench scores` has seeded a server on PostgreSQL (the
issue's setup: 1,000,000 customers, about 10,000,000 transactions):

    python3 bench/recompute_reference.py DATABASE_URL ENDPOINT
    # e.g. postgres://root@127.0.0.1:5432/patron_bench_1m http://127.0.0.1:50980
Needs: pip install pandas lifetimes psycopg2-binary numpy

pandas reads the purchases from the database twice, once from scoring's read
model (one row per customer, its purchase days packed; unpacked with NumPy)
and once from profile's transactions (the data as an analyst finds it,
summed per customer and day in pandas), and each time computes what
RecomputeScores computes from it: the
purchase summary (x, t_x, T, monetary, repeat mean value), the RFM rank
scores, and with the model Patron fitted (read from GetModel), P(alive),
expected purchases over 365 days and the expected occasion value (lifetimes'
closed forms). It keeps its results in memory; Patron's figure also stores
every score and writes it to Redis, so the comparison favours pandas. Then
the script times `patron score recompute` against the same server, and
prints the three with the ratios.
"""
import json
import subprocess
import sys
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import psycopg2
from lifetimes import BetaGeoFitter, GammaGammaFitter

DATABASE_URL, ENDPOINT = sys.argv[1], sys.argv[2]
PATRON = sys.argv[3] if len(sys.argv) > 3 else "target/release/patron"


def patron(*args):
    out = subprocess.run([PATRON, *args, "--endpoint", ENDPOINT],
                         capture_output=True, text=True, check=True).stdout
    return out


model = json.loads(patron("model", "show"))
bg_p, gg_p = model["bg_nbd"], model["gamma_gamma"]
as_of_day = int(datetime.now(timezone.utc).timestamp()) // 86_400


def score(rank_min, n):
    # 1 + floor(5 * (#strictly smaller) / n), ties share: rank(method="min") - 1 = #smaller.
    return 1 + np.minimum((5 * (rank_min - 1)) // n, 4)


def read_histories():
    """Scoring's read model: one row per customer, its purchase days packed
    24 bytes each, big-endian (day, amount_nanos, cost_nanos, transactions).
    Unpacked with NumPy in one go."""
    with psycopg2.connect(DATABASE_URL) as conn, conn.cursor() as cur:
        cur.execute("SELECT customer_id, days FROM scoring_customer_histories")
        rows = cur.fetchall()
    ids = np.array([r[0] for r in rows], dtype=object)
    packed = [r[1] for r in rows]
    counts = np.fromiter((len(b) // 24 for b in packed), dtype=np.int64, count=len(packed))
    days = np.frombuffer(b"".join(packed), dtype=np.dtype([
        ("day", ">i4"), ("amount_nanos", ">i8"), ("cost_nanos", ">i8"), ("transactions", ">i4")]))
    return pd.DataFrame({
        "customer_id": np.repeat(ids, counts),
        "day": days["day"].astype(np.int32),
        "amount_nanos": days["amount_nanos"].astype(np.int64),
        "transactions": days["transactions"].astype(np.int64),
    })


def read_transactions():
    """Profile's transactions, the data as an analyst finds it: one row per
    transaction, summed per customer and day here."""
    with psycopg2.connect(DATABASE_URL) as conn:
        tx = pd.read_sql(
            "SELECT customer_id, floor(extract(epoch FROM occurred_at) / 86400)::int AS day, "
            "amount_nanos FROM profile_transactions", conn)
    return (tx.groupby(["customer_id", "day"], sort=False)
              .agg(amount_nanos=("amount_nanos", "sum"), transactions=("amount_nanos", "size"))
              .reset_index())


def pandas_recompute(read):
    global pandas_read_s
    read_start = time.perf_counter()
    days = read()
    pandas_read_s = time.perf_counter() - read_start
    days = days[days["day"] <= as_of_day].sort_values(["customer_id", "day"])
    days["amount"] = days["amount_nanos"] / 1e9
    g = days.groupby("customer_id", sort=False)
    s = pd.DataFrame({
        "first": g["day"].min(), "last": g["day"].max(), "occasions": g["day"].size(),
        "frequency": g["transactions"].sum(), "monetary": g["amount"].sum(),
        "first_amount": g["amount"].first(),
    })
    s["x"] = s["occasions"] - 1
    s["t_x"] = (s["last"] - s["first"]).astype(float)
    s["T"] = (as_of_day - s["first"]).astype(float)
    repeat = s["x"] > 0
    s["repeat_mean"] = np.where(repeat, (s["monetary"] - s["first_amount"]) / s["x"].clip(lower=1), 0.0)
    n = len(s)
    s["r"] = score((as_of_day - s["last"]).rank(method="min", ascending=False), n)
    s["f"] = score(s["frequency"].rank(method="min"), n)
    s["m"] = score(s["monetary"].rank(method="min"), n)
    bgf = BetaGeoFitter()
    bgf.params_ = pd.Series({"r": bg_p["r"], "alpha": bg_p["alpha_days"], "a": bg_p["a"], "b": bg_p["b"]})
    s["p_alive"] = bgf.conditional_probability_alive(s["x"], s["t_x"], s["T"])
    s["expected_365"] = bgf.conditional_expected_number_of_purchases_up_to_time(365, s["x"], s["t_x"], s["T"])
    ggf = GammaGammaFitter()
    ggf.params_ = pd.Series({"p": gg_p["p"], "q": gg_p["q"], "v": gg_p["v"]})
    s["occasion_value"] = ggf.conditional_expected_average_profit(s["x"], s["repeat_mean"])
    s["clv"] = s["expected_365"] * s["occasion_value"] * 0.3
    return s


def patron_recompute():
    start = time.perf_counter()
    subprocess.run([PATRON, "score", "recompute", "--endpoint", ENDPOINT], check=True,
                   capture_output=True)
    return time.perf_counter() - start


# pandas from each source, then Patron, in one run.
for source, read in [("the read model (scoring_customer_histories)", read_histories),
                     ("profile's transactions", read_transactions)]:
    start = time.perf_counter()
    scores = pandas_recompute(read)
    pandas_s = time.perf_counter() - start
    print(f"pandas + lifetimes from {source}: {len(scores):,} customers, {pandas_s:.1f} s "
          f"(read {pandas_read_s:.1f} s, compute {pandas_s - pandas_read_s:.1f} s)", flush=True)
    del scores
    if source.startswith("the read model"):
        first_pandas_s = pandas_s

patron_s = patron_recompute()
print(f"Patron (read, score, store, write to Redis): {patron_s:.1f} s; "
      f"pandas from the read model {first_pandas_s / patron_s:.1f}x, "
      f"from the transactions {pandas_s / patron_s:.1f}x slower")
