"""Model benchmarks, Patron beside pandas, polars and lifetimes, in one run
on the same generated data (1M customers, 10M transactions).

Run from the repository root:
    python3 bench/models_reference.py [DIR]        # DIR defaults to /tmp/patron-bench
Needs: pip install pandas polars lifetimes numpy

It runs the Rust bench binary first (which writes DIR/purchases.bin once),
then times the same steps in Python on that file, and prints the table that
goes into BENCHMARKS.md. Each Rust figure is the median of 5 runs after a warm-up; each
Python figure is one run (they take seconds to minutes).
"""
import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import polars as pl
from lifetimes import BetaGeoFitter, GammaGammaFitter

DIR = sys.argv[1] if len(sys.argv) > 1 else "/tmp/patron-bench"
AS_OF = 20_000

rust_out = subprocess.run(
    ["cargo", "run", "--release", "-q", "-p", "patron-domain", "--example", "model_bench", "--", DIR],
    capture_output=True, text=True, check=True,
).stdout
rust = {row["step"]: row for row in map(json.loads, rust_out.splitlines())}

dtype = np.dtype([("customer", "<u4"), ("day", "<i4"), ("amount", "<i8"), ("cost", "<i8")])
raw = np.fromfile(f"{DIR}/purchases.bin", dtype=dtype)
pdf = pd.DataFrame({"customer": raw["customer"], "day": raw["day"], "amount": raw["amount"] / 1e9})
plf = pl.DataFrame({"customer": raw["customer"], "day": raw["day"], "amount": raw["amount"] / 1e9})


def timed(f):
    start = time.perf_counter()
    result = f()
    return time.perf_counter() - start, result


def score(rank_min, n):
    # 1 + floor(5 * (#strictly smaller) / n), ties share: rank(method="min") - 1 = #smaller.
    return 1 + np.minimum((5 * (rank_min - 1)) // n, 4)


def pandas_rfm():
    g = pdf.groupby("customer").agg(last=("day", "max"), frequency=("day", "size"), monetary=("amount", "sum"))
    n = len(g)
    recency = AS_OF - g["last"]
    g["f"] = score(g["frequency"].rank(method="min"), n)
    g["m"] = score(g["monetary"].rank(method="min"), n)
    g["r"] = score(recency.rank(method="min", ascending=False), n)
    return g


def pandas_summary():
    occ = pdf.groupby(["customer", "day"], sort=True)["amount"].sum().reset_index()
    g = occ.groupby("customer")
    first, last, n = g["day"].min(), g["day"].max(), g.size()
    x = n - 1
    repeat_total = g["amount"].sum() - g["amount"].first()
    return pd.DataFrame({"x": x, "t_x": last - first, "T": AS_OF - first,
                         "m": (repeat_total / x.where(x > 0, 1)).where(x > 0, 0.0)})


def polars_rfm():
    g = plf.group_by("customer").agg(pl.col("day").max().alias("last"), pl.len().alias("frequency"),
                                     pl.col("amount").sum().alias("monetary"))
    n = g.height
    return g.with_columns(
        (1 + ((5 * (pl.col("frequency").rank("min") - 1)) // n).clip(upper_bound=4)).alias("f"),
        (1 + ((5 * (pl.col("monetary").rank("min") - 1)) // n).clip(upper_bound=4)).alias("m"),
        (1 + ((5 * ((AS_OF - pl.col("last")).rank("min", descending=True) - 1)) // n).clip(upper_bound=4)).alias("r"),
    )


def polars_summary():
    occ = plf.group_by(["customer", "day"]).agg(pl.col("amount").sum()).sort(["customer", "day"])
    g = occ.group_by("customer").agg(
        pl.col("day").min().alias("first"), pl.col("day").max().alias("last"), pl.len().alias("n"),
        (pl.col("amount").sum() - pl.col("amount").first()).alias("repeat_total"))
    return g.with_columns((pl.col("n") - 1).alias("x")).with_columns(
        (pl.col("last") - pl.col("first")).alias("t_x"), (AS_OF - pl.col("first")).alias("T"),
        pl.when(pl.col("x") > 0).then(pl.col("repeat_total") / pl.col("x")).otherwise(0.0).alias("m"))


rows = []
t_pd_rfm, _ = timed(pandas_rfm)
t_pd_sum, summary = timed(pandas_summary)
t_pl_rfm, _ = timed(polars_rfm)
t_pl_sum, _ = timed(polars_summary)
rows.append(("RFM scores + BG/NBD summary, 10M transactions / 1M customers",
             rust["rfm_and_summary"]["seconds"],
             {"pandas": t_pd_rfm + t_pd_sum, "polars": t_pl_rfm + t_pl_sum}))

bg = BetaGeoFitter(penalizer_coef=0.0)
try:
    t_bg, _ = timed(lambda: bg.fit(summary["x"], summary["t_x"], summary["T"]))
    bg_params = bg.params_.to_dict()
except Exception as e:  # lifetimes sometimes fails to converge
    t_bg, bg_params = float("nan"), str(e).strip()
rows.append(("BG/NBD fit, 1M customers", rust["bgnbd_fit"]["seconds"], {"lifetimes": t_bg}))

repeat = summary[summary["x"] > 0]
gg = GammaGammaFitter(penalizer_coef=0.0)
t_gg, _ = timed(lambda: gg.fit(repeat["x"], repeat["m"]))
rows.append((f"Gamma-Gamma fit, {len(repeat):,} repeat buyers", rust["gamma_gamma_fit"]["seconds"], {"lifetimes": t_gg}))

if isinstance(bg_params, dict):
    def predict():
        e = bg.conditional_expected_number_of_purchases_up_to_time(365, summary["x"], summary["t_x"], summary["T"])
        alive = bg.conditional_probability_alive(summary["x"], summary["t_x"], summary["T"])
        value = gg.conditional_expected_average_profit(summary["x"].clip(lower=1), summary["m"].where(summary["m"] > 0, 1.0))
        return e, alive, value
    t_pred, _ = timed(predict)
else:
    t_pred = float("nan")
rows.append(("Predictions (P(alive), E[purchases 365d], E[value]), 1M customers",
             rust["predictions"]["seconds"], {"lifetimes": t_pred}))

print("| step | Patron | reference | Patron faster by |")
print("| --- | --- | --- | --- |")
for name, ours, refs in rows:
    for ref, secs in refs.items():
        print(f"| {name} | {ours:.3f} s | {ref} {secs:.3f} s | {secs / ours:.1f}x |")
print()
print("patron bg/nbd:", {k: rust["bgnbd_fit"][k] for k in ("r", "alpha", "a", "b")}, "lifetimes:", bg_params)
print("patron gamma-gamma:", {k: rust["gamma_gamma_fit"][k] for k in ("p", "q", "v")}, "lifetimes:", gg.params_.to_dict())
if isinstance(bg_params, dict):
    e, alive, _ = predict()
    # lifetimes takes log(2F1(r, b; a+b-1; z)), which is NaN when a + b < 1 and
    # the series is negative: those one-time buyers get no prediction there.
    finite = np.isfinite(e)
    print("sum of E[purchases 365d]: patron", rust["predictions"]["sum_expected_purchases"],
          "lifetimes", float(e[finite].sum()), f"(NaN for {int((~finite).sum())} customers, all with x = {sorted(set(summary['x'][~finite]))})")
    print("sum of P(alive): patron", rust["predictions"]["sum_p_alive"], "lifetimes", float(alive.sum()))
