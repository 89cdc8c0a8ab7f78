"""Reference values for the oracle tests in crates/domain/tests/oracle.rs.

Run: python3 bench/lifetimes_reference.py   (needs `pip install lifetimes`)

Fits BG/NBD and Gamma-Gamma with the `lifetimes` package on the CDNOW
summary it ships (time in weeks), and evaluates the closed-form
per-customer quantities at the parameters Fader, Hardie & Lee (2005)
report, so those values do not depend on any optimiser.
"""
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.datasets import load_dataset

data = load_dataset("cdnow_customers_summary_with_transactions.csv")
bg = BetaGeoFitter(penalizer_coef=0.0).fit(data["x"], data["t_x"], data["T"])
print("bgnbd fit", bg.params_.to_dict())
repeat = data[data["x"] > 0]
gg = GammaGammaFitter(penalizer_coef=0.0).fit(repeat["x"], repeat["zbar"])
print("gamma-gamma fit", gg.params_.to_dict())

paper = BetaGeoFitter()
paper.params_ = pd.Series({"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426})
for x, t_x, T in [(2, 30.43, 38.86), (0, 0.0, 38.86), (7, 29.43, 38.86), (1, 1.71, 38.86), (23, 37.0, 38.5)]:
    e = float(paper.conditional_expected_number_of_purchases_up_to_time(39, x, t_x, T))
    p = float(paper.conditional_probability_alive(x, t_x, T).ravel()[0])
    print(f"closed form x={x} t_x={t_x} T={T}: E[Y(39)]={e:.12f} P(alive)={p:.12f}")
print(f"unconditional E[X(39)]={float(paper.expected_number_of_purchases_up_to_time(39)):.12f}")
