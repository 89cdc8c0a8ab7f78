//! The BG/NBD model (Fader, Hardie & Lee 2005, "Counting Your Customers the
//! Easy Way"). Time is in whatever unit the data uses; Patron uses days.
//!
//! While active, a customer buys at rate λ ~ Gamma(r, α); after each
//! purchase they drop out with probability p ~ Beta(a, b). A customer is
//! summarised by (x, t_x, T): repeat purchases, time of the last one, and
//! time observed, all from the first purchase.

use rayon::prelude::*;

use super::{
    FitError, MAX_LOG_SCALE, held_names, log_shape_bounds,
    optimize::{BoxedMinimum, bfgs_boxed},
    shape_from_log,
    special::{hyp2f1, ln_hyp2f1},
};

/// Fitted BG/NBD parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BgNbdParams {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

/// One customer (or `weight` identical customers).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdRow {
    pub x: u32,
    pub t_x: f64,
    pub t: f64,
    pub weight: f64,
}

/// A fit and how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct BgNbdFit {
    pub params: BgNbdParams,
    /// Names of the shape parameters held at a bound (see
    /// [`super::SHAPE_MIN`]): `"r"`, `"a"`, `"b"`.
    pub at_limit: Vec<&'static str>,
    pub log_likelihood: f64,
    pub iterations: usize,
    pub customers: f64,
    pub repeat_customers: f64,
}

/// Per-x tables of the lgamma differences and their derivatives, so a
/// likelihood evaluation costs two logarithms per row.
struct XTables {
    /// ln Γ(r+x) - ln Γ(r) = Σ_{k<x} ln(r+k), and its r-derivative
    s_r: Vec<f64>,
    ds_r: Vec<f64>,
    /// ln B(a, b+x) - ln B(a, b) = Σ ln(b+k) - Σ ln(a+b+k), and its derivatives
    s_beta: Vec<f64>,
    ds_beta_da: Vec<f64>,
    ds_beta_db: Vec<f64>,
    /// ln(b + x - 1) and 1 / (b + x - 1), for x >= 1
    ln_b_x1: Vec<f64>,
    inv_b_x1: Vec<f64>,
}

impl XTables {
    fn new(p: &BgNbdParams, max_x: u32) -> Self {
        let n = max_x as usize + 1;
        let mut t = XTables {
            s_r: vec![0.0; n],
            ds_r: vec![0.0; n],
            s_beta: vec![0.0; n],
            ds_beta_da: vec![0.0; n],
            ds_beta_db: vec![0.0; n],
            ln_b_x1: vec![0.0; n],
            inv_b_x1: vec![0.0; n],
        };
        for x in 1..n {
            let k = (x - 1) as f64;
            t.s_r[x] = t.s_r[x - 1] + (p.r + k).ln();
            t.ds_r[x] = t.ds_r[x - 1] + 1.0 / (p.r + k);
            t.s_beta[x] = t.s_beta[x - 1] + (p.b + k).ln() - (p.a + p.b + k).ln();
            t.ds_beta_da[x] = t.ds_beta_da[x - 1] - 1.0 / (p.a + p.b + k);
            t.ds_beta_db[x] = t.ds_beta_db[x - 1] + 1.0 / (p.b + k) - 1.0 / (p.a + p.b + k);
            t.ln_b_x1[x] = (p.b + k).ln();
            t.inv_b_x1[x] = 1.0 / (p.b + k);
        }
        t
    }
}

/// Largest whole-day time for which ln(α + t) is tabulated.
const MAX_TABULATED_DAY: f64 = 100_000.0;

/// Σ weight × log-likelihood and its gradient in (r, α, a, b).
pub fn log_likelihood_and_gradient(p: &BgNbdParams, rows: &[BgNbdRow]) -> (f64, [f64; 4]) {
    let whole_days = rows
        .iter()
        .all(|r| r.t.fract() == 0.0 && r.t_x.fract() == 0.0 && r.t <= MAX_TABULATED_DAY);
    log_likelihood_and_gradient_with(p, rows, whole_days)
}

fn log_likelihood_and_gradient_with(
    p: &BgNbdParams,
    rows: &[BgNbdRow],
    whole_days: bool,
) -> (f64, [f64; 4]) {
    let max_x = rows.iter().map(|r| r.x).max().unwrap_or(0);
    let tables = XTables::new(p, max_x);
    let ln_alpha = p.alpha.ln();
    let ln_a = p.a.ln();
    // The textbook terms r·ln α and -(r+x)·ln(α+T) are each about 2e7 when
    // r sits at its bound (10^6, every customer buying at the same rate)
    // and cancel to a few units; written with l(t) = ln(1 + t/α) they are
    // -x·ln α - (r+x)·l(T), small where the result is small.
    // With whole-day times (Patron's data), l(d) is a table lookup.
    let ln1p_table: Vec<f64> = if whole_days {
        let max_day = rows.iter().map(|r| r.t as usize).max().unwrap_or(0);
        (0..=max_day)
            .map(|d| (d as f64 / p.alpha).ln_1p())
            .collect()
    } else {
        Vec::new()
    };
    let l = |t: f64| {
        if whole_days {
            ln1p_table[t as usize]
        } else {
            (t / p.alpha).ln_1p()
        }
    };
    let per_row = |row: &BgNbdRow| -> (f64, [f64; 4]) {
        let x = row.x as usize;
        let xf = f64::from(row.x);
        let rx = p.r + xf;
        let l_t = l(row.t);
        let ln_a1 = tables.s_r[x];
        let ln_a2 = tables.s_beta[x];
        let ln_a3 = -xf * ln_alpha - rx * l_t;
        let (ll, w4, l_tx) = if row.x > 0 {
            let l_tx = l(row.t_x);
            let ln_a4 = ln_a - tables.ln_b_x1[x] - xf * ln_alpha - rx * l_tx;
            // One exp serves both log(A3 + A4) and the weight A4 / (A3 + A4).
            let d = ln_a4 - ln_a3;
            let e = (-d.abs()).exp();
            let lse = ln_a3.max(ln_a4) + e.ln_1p();
            let w4 = if d > 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            };
            (ln_a1 + ln_a2 + lse, w4, l_tx)
        } else {
            (ln_a1 + ln_a2 + ln_a3, 0.0, 0.0)
        };
        let w3 = 1.0 - w4;
        let d_r = tables.ds_r[x] - w3 * l_t - w4 * l_tx;
        // r/α - (r+x)/(α+t) = (r·t - x·α) / (α (α+t)), without the cancellation.
        let d_alpha = (w3 * (p.r * row.t - xf * p.alpha) / (p.alpha + row.t)
            + if row.x > 0 {
                w4 * (p.r * row.t_x - xf * p.alpha) / (p.alpha + row.t_x)
            } else {
                0.0
            })
            / p.alpha;
        let d_a = tables.ds_beta_da[x] + w4 / p.a;
        let d_b = tables.ds_beta_db[x]
            - if row.x > 0 {
                w4 / (p.b + xf - 1.0)
            } else {
                0.0
            };
        let w = row.weight;
        (w * ll, [w * d_r, w * d_alpha, w * d_a, w * d_b])
    };
    let add = |(l1, g1): (f64, [f64; 4]), (l2, g2): (f64, [f64; 4])| {
        (
            l1 + l2,
            [g1[0] + g2[0], g1[1] + g2[1], g1[2] + g2[2], g1[3] + g2[3]],
        )
    };
    if rows.len() < 50_000 {
        rows.iter().map(per_row).fold((0.0, [0.0; 4]), add)
    } else {
        rows.par_chunks(16_384)
            .map(|chunk| chunk.iter().map(per_row).fold((0.0, [0.0; 4]), add))
            .reduce(|| (0.0, [0.0; 4]), add)
    }
}

/// Σ weight × log-likelihood.
pub fn log_likelihood(p: &BgNbdParams, rows: &[BgNbdRow]) -> f64 {
    log_likelihood_and_gradient(p, rows).0
}

/// Merges identical (x, t_x, T) rows into one weighted row: the fit's cost
/// then scales with distinct histories, not customers.
pub fn compress(rows: &[BgNbdRow]) -> Vec<BgNbdRow> {
    let mut sorted: Vec<BgNbdRow> = rows.to_vec();
    sorted.par_sort_unstable_by(|a, b| {
        a.x.cmp(&b.x)
            .then(a.t_x.total_cmp(&b.t_x))
            .then(a.t.total_cmp(&b.t))
    });
    let mut out: Vec<BgNbdRow> = Vec::with_capacity(sorted.len() / 4 + 1);
    for row in sorted {
        match out.last_mut() {
            Some(last) if last.x == row.x && last.t_x == row.t_x && last.t == row.t => {
                last.weight += row.weight
            }
            _ => out.push(row),
        }
    }
    out
}

/// BFGS on log-parameters over (possibly weighted) rows, shapes within
/// their bounds; the objective is the mean negative log-likelihood per
/// customer.
fn minimize(
    data: &[BgNbdRow],
    whole_days: bool,
    start: &[f64],
    inverse_hessian: Option<&[Vec<f64>]>,
) -> BoxedMinimum {
    let scale = 1.0 / data.iter().map(|r| r.weight).sum::<f64>();
    let objective = |theta: &[f64]| {
        let p = BgNbdParams {
            r: theta[0].exp(),
            alpha: theta[1].exp(),
            a: theta[2].exp(),
            b: theta[3].exp(),
        };
        let (ll, g) = log_likelihood_and_gradient_with(&p, data, whole_days);
        let grad = vec![
            -g[0] * p.r * scale,
            -g[1] * p.alpha * scale,
            -g[2] * p.a * scale,
            -g[3] * p.b * scale,
        ];
        (-ll * scale, grad)
    };
    let shape = log_shape_bounds();
    bfgs_boxed(
        &objective,
        start,
        inverse_hessian,
        &[shape, None, shape, shape],
        1e-9,
        1e-15,
        1_000,
    )
}

/// Populations above four times this many customers are first fitted on a
/// sample of this size, to warm-start the full fit.
pub const WARM_START_CUSTOMERS: usize = 50_000;

/// Maximum-likelihood fit. Errors (never boundary parameters) when the data
/// cannot identify the model or the optimiser does not converge.
pub fn fit(rows: &[BgNbdRow]) -> Result<BgNbdFit, FitError> {
    fit_with_warm_start(rows, WARM_START_CUSTOMERS)
}

/// [`fit`] with an explicit warm-start sample size (exposed for tests).
pub fn fit_with_warm_start(
    rows: &[BgNbdRow],
    warm_start_customers: usize,
) -> Result<BgNbdFit, FitError> {
    let customers: f64 = rows.iter().map(|r| r.weight).sum();
    let repeat_customers: f64 = rows.iter().filter(|r| r.x > 0).map(|r| r.weight).sum();
    if rows.is_empty() || customers <= 0.0 {
        return Err(FitError::NoData);
    }
    if let Some(bad) = rows.iter().find(|r| {
        !(r.t.is_finite() && r.t_x.is_finite() && r.weight.is_finite())
            || r.t_x < 0.0
            || r.t < r.t_x
            || r.weight < 0.0
            || (r.x == 0 && r.t_x != 0.0)
    }) {
        return Err(FitError::InvalidRow(format!("{bad:?}")));
    }
    if repeat_customers == 0.0 {
        return Err(FitError::NoRepeatPurchases);
    }
    // A customer with one repeat purchase contributes
    // λe^(-λ t_x) · (p + (1 - p) e^(-λ (T - t_x))) before mixing: rising in
    // the dropout probability p wherever t_x < T (flat where t_x = T), and
    // one-time buyers do not involve p. Only a second repeat purchase
    // (a factor (1 - p) per purchase survived) pulls the other way. Without
    // one the maximum is on the boundary E[p] = 1 (b at its lower bound):
    // every repeat buyer gone, P(alive) ≈ 0 the day after a purchase. That
    // is no estimate, so it is refused like a population without repeats.
    if !rows.iter().any(|r| r.x >= 2 && r.weight > 0.0) {
        return Err(FitError::NoSecondRepeatPurchase);
    }
    let data = compress(rows);
    let whole_days = data
        .iter()
        .all(|r| r.t.fract() == 0.0 && r.t_x.fract() == 0.0 && r.t <= MAX_TABULATED_DAY);
    let mean_t = data.iter().map(|r| r.t * r.weight).sum::<f64>() / customers;
    let mut start = vec![0.0, mean_t.max(1e-3).ln(), 0.0, 0.0];
    let mut curvature = None;
    // Large populations: converge on a uniform 1-in-k sample of the
    // customers first (cheap, and within sampling error of the answer), then
    // finish on all of them from there. The result is still the full-data
    // optimum, under the same convergence test.
    if rows.len() > 4 * warm_start_customers && data.len() > 4 * warm_start_customers {
        let step = rows.len() / warm_start_customers;
        let sample = compress(&rows.iter().step_by(step).copied().collect::<Vec<_>>());
        let warm = minimize(&sample, whole_days, &start, None);
        if warm.minimum.converged && warm.minimum.x.iter().all(|t| t.abs() <= MAX_LOG_SCALE) {
            start = warm.minimum.x;
            curvature = Some(warm.minimum.inverse_hessian);
        }
    }
    let BoxedMinimum {
        minimum: m,
        at_bound,
    } = minimize(&data, whole_days, &start, curvature.as_deref());
    let params = BgNbdParams {
        r: shape_from_log(m.x[0], at_bound[0]),
        alpha: m.x[1].exp(),
        a: shape_from_log(m.x[2], at_bound[2]),
        b: shape_from_log(m.x[3], at_bound[3]),
    };
    if !m.converged || m.x[1].abs() > MAX_LOG_SCALE || !m.value.is_finite() {
        return Err(FitError::NotConverged {
            iterations: m.iterations,
            detail: format!("{params:?}"),
        });
    }
    Ok(BgNbdFit {
        params,
        at_limit: held_names(&["r", "alpha", "a", "b"], &at_bound),
        log_likelihood: -m.value * customers,
        iterations: m.iterations,
        customers,
        repeat_customers,
    })
}

impl BgNbdParams {
    /// P(alive | x, t_x, T). BG/NBD gives 1 for customers without a repeat
    /// purchase (see [`super::churn`] for how Patron rates them).
    pub fn p_alive(&self, x: u32, t_x: f64, t: f64) -> f64 {
        if x == 0 {
            return 1.0;
        }
        let rx = self.r + f64::from(x);
        let odds = self.a / (self.b + f64::from(x) - 1.0)
            * (rx * ((t / self.alpha).ln_1p() - (t_x / self.alpha).ln_1p())).exp();
        1.0 / (1.0 + odds)
    }

    /// E[Y(horizon) | x, t_x, T]: expected purchases in (T, T + horizon].
    ///
    /// Fader, Hardie & Lee (2005), eq. 10, with its 2F1(r+x, b+x; a+b+x-1; z)
    /// rewritten by Euler's transformation, 2F1(A, B; C; z) =
    /// (1-z)^(C-A-B) 2F1(C-A, C-B; C; z). With z = h/(α+T+h) the factor
    /// ((α+T)/(α+T+h))^(r+x) in front of it is (1-z)^(r+x), so the product
    /// becomes (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z): the same number,
    /// but a series whose terms shrink from the start (the original one
    /// first grows for about x·z/(1-z) terms and overflows for frequent
    /// buyers), and no power of (1-z) that overflows.
    pub fn conditional_expected_purchases(
        &self,
        horizon: f64,
        x: u32,
        t_x: f64,
        t: f64,
    ) -> Option<f64> {
        // At a = 1 the formula is 0/0 (a removable singularity: the value
        // is smooth in a), and near it the two factors cancel. Such an a is
        // not rare: where the data says nothing about dropout (one customer
        // who bought today) the likelihood is flat in a and b and the fit
        // leaves them at their start, 1. The mean of the values at 1 ± 1e-5
        // is the value at 1 to about 1e-10.
        const STEP: f64 = 1e-5;
        if (self.a - 1.0).abs() < STEP / 2.0 {
            let at = |a: f64| BgNbdParams { a, ..*self }.eq10(horizon, x, t_x, t);
            return Some((at(1.0 - STEP)? + at(1.0 + STEP)?) / 2.0);
        }
        self.eq10(horizon, x, t_x, t)
    }

    /// Fader, Hardie & Lee's eq. 10 as written (see above).
    fn eq10(&self, horizon: f64, x: u32, t_x: f64, t: f64) -> Option<f64> {
        let xf = f64::from(x);
        let numerator = (self.a + self.b + xf - 1.0) / (self.a - 1.0)
            * self.one_minus_hypergeometric_term(horizon, x, t)?;
        let denominator = if x > 0 {
            1.0 / self.p_alive(x, t_x, t)
        } else {
            1.0
        };
        let e = numerator / denominator;
        e.is_finite().then_some(e.max(0.0))
    }

    /// [`Self::conditional_expected_purchases`] for a whole population, on
    /// all cores.
    pub fn conditional_expected_purchases_many(
        &self,
        horizon: f64,
        rows: &[BgNbdRow],
    ) -> Vec<Option<f64>> {
        rows.par_iter()
            .map(|r| self.conditional_expected_purchases(horizon, r.x, r.t_x, r.t))
            .collect()
    }

    /// 1 - ((α+T)/(α+T+h))^(r+x) 2F1(r+x, b+x; a+b+x-1; z), z = h/(α+T+h).
    ///
    /// Euler's form (below) multiplies (1-z)^(a-1) by a series that grows
    /// to about (1-z)^-(a-1) over some (a-1)·z/(1-z) terms. Fitted a is
    /// usually below a few units, and then Euler's form is the one to sum;
    /// but a population whose dropout probability is about the same for
    /// everyone has large a and b (up to the shape bound, 10^6), where that
    /// series needs millions of terms and overflows f64 once (a-1)·ln(1/(1-z))
    /// passes 709. There (a > 1, so every term of the original series is
    /// positive) the original form is summed in logarithms instead.
    fn one_minus_hypergeometric_term(&self, horizon: f64, x: u32, t: f64) -> Option<f64> {
        let ln_one_minus_z = -(horizon / (self.alpha + t)).ln_1p();
        if (self.a - 1.0) * -ln_one_minus_z <= 200.0 {
            return Some(1.0 - self.euler_term(horizon, x, t)?);
        }
        let z = horizon / (self.alpha + t + horizon);
        let rx = self.r + f64::from(x);
        let ln_series = ln_hyp2f1(
            rx,
            self.b + f64::from(x),
            self.a + self.b + f64::from(x) - 1.0,
            z,
        )?;
        Some(-(rx * ln_one_minus_z + ln_series).exp_m1())
    }

    /// (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z) with z = h/(α+T+h).
    fn euler_term(&self, horizon: f64, x: u32, t: f64) -> Option<f64> {
        let z = horizon / (self.alpha + t + horizon);
        let rest = (self.alpha + t) / (self.alpha + t + horizon);
        let series = hyp2f1(
            self.a + self.b - 1.0 - self.r,
            self.a - 1.0,
            self.a + self.b + f64::from(x) - 1.0,
            z,
        )?;
        Some(rest.powf(self.a - 1.0) * series)
    }

    /// E[X(t)]: expected purchases of a new customer in (0, t], which is
    /// the conditional expectation of a customer with no purchase history
    /// (x = 0, observed for no time).
    pub fn expected_purchases(&self, t: f64) -> Option<f64> {
        self.conditional_expected_purchases(t, 0, 0.0, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gradient against central differences of the likelihood.
    #[test]
    fn analytic_gradient_matches_numeric() {
        let rows = [
            BgNbdRow {
                x: 0,
                t_x: 0.0,
                t: 30.0,
                weight: 3.0,
            },
            BgNbdRow {
                x: 2,
                t_x: 10.5,
                t: 40.0,
                weight: 1.0,
            },
            BgNbdRow {
                x: 7,
                t_x: 35.0,
                t: 38.0,
                weight: 2.0,
            },
        ];
        let p = BgNbdParams {
            r: 0.6,
            alpha: 4.0,
            a: 0.8,
            b: 2.5,
        };
        let (_, g) = log_likelihood_and_gradient(&p, &rows);
        let h = 1e-6;
        let bump = |i: usize, d: f64| {
            let mut q = p;
            match i {
                0 => q.r += d,
                1 => q.alpha += d,
                2 => q.a += d,
                _ => q.b += d,
            }
            log_likelihood(&q, &rows)
        };
        for (i, gi) in g.iter().enumerate() {
            let numeric = (bump(i, h) - bump(i, -h)) / (2.0 * h);
            assert!(
                (gi - numeric).abs() < 1e-6 * numeric.abs().max(1.0),
                "param {i}: {gi} vs {numeric}"
            );
        }
    }

    /// Why `fit` refuses populations whose repeat buyers have one repeat
    /// purchase each: wherever the model stands, a lower b (a higher mean
    /// dropout probability a/(a+b)) fits such data better, down to b = 0.
    /// One customer with a second repeat purchase bounds it.
    #[test]
    fn dropout_needs_a_second_repeat_purchase() {
        let mut rows = vec![
            BgNbdRow {
                x: 1,
                t_x: 20.0,
                t: 90.0,
                weight: 4.0,
            },
            BgNbdRow {
                x: 1,
                t_x: 60.0,
                t: 60.0,
                weight: 1.0,
            },
            BgNbdRow {
                x: 0,
                t_x: 0.0,
                t: 40.0,
                weight: 9.0,
            },
        ];
        for (r, alpha, a, b) in [
            (0.2, 4.0, 0.8, 2.4),
            (2.0, 50.0, 0.1, 0.3),
            (1.0, 10.0, 5.0, 1e-3),
        ] {
            let ll = |b: f64| log_likelihood(&BgNbdParams { r, alpha, a, b }, &rows);
            assert!(ll(b / 2.0) > ll(b), "{r} {alpha} {a} {b}");
        }
        assert_eq!(fit(&rows).unwrap_err(), FitError::NoSecondRepeatPurchase);
        rows.push(BgNbdRow {
            x: 2,
            t_x: 30.0,
            t: 80.0,
            weight: 1.0,
        });
        let f = fit(&rows).expect("a second repeat purchase identifies the dropout");
        assert!(!f.at_limit.contains(&"b"), "{f:?}");
        assert!(f.params.p_alive(1, 60.0, 60.0) > 0.05, "{f:?}");
    }

    #[test]
    fn degenerate_populations() {
        let one_time = [BgNbdRow {
            x: 0,
            t_x: 0.0,
            t: 10.0,
            weight: 5.0,
        }];
        assert_eq!(fit(&one_time).unwrap_err(), FitError::NoRepeatPurchases);
        assert_eq!(fit(&[]).unwrap_err(), FitError::NoData);
        let single = [BgNbdRow {
            x: 3,
            t_x: 5.0,
            t: 10.0,
            weight: 1.0,
        }];
        let identical = [BgNbdRow {
            x: 3,
            t_x: 5.0,
            t: 10.0,
            weight: 100.0,
        }];
        // Customers all alike: the homogeneous limit (see the oracle tests),
        // not an error. Same rate 0.515/day, dropout 0.278: five silent days
        // leave P(alive) = 1 / (1 + 0.278/0.722 · e^(0.515 · 5)).
        let f = fit(&identical).expect("a population of equals is a fit");
        assert!(f.at_limit.contains(&"r"), "{f:?}");
        let (rate, dropout) = (
            f.params.r / f.params.alpha,
            f.params.a / (f.params.a + f.params.b),
        );
        let homogeneous = 1.0 / (1.0 + dropout / (1.0 - dropout) * (rate * 5.0).exp());
        assert!(
            (f.params.p_alive(3, 5.0, 10.0) - homogeneous).abs() < 1e-6,
            "{f:?}"
        );
        // One customer is the same population (the likelihood per customer
        // is the same), so the same fit: what one history says, in the limit
        // model (a shop's first customer with two repeat purchases is scored
        // with a model too).
        let one = fit(&single).expect("one customer with a repeat purchase is a fit");
        assert_eq!(one.at_limit, f.at_limit);
        assert!(
            (one.params.p_alive(3, 5.0, 10.0) - homogeneous).abs() < 1e-6,
            "{one:?}"
        );
        // Repeat buyers with one repeat purchase each, whatever else: no
        // estimate of the dropout (the test below shows the boundary the
        // likelihood runs to).
        let first_repeats = [
            BgNbdRow {
                x: 1,
                t_x: 5.0,
                t: 10.0,
                weight: 3.0,
            },
            BgNbdRow {
                x: 0,
                t_x: 0.0,
                t: 30.0,
                weight: 7.0,
            },
        ];
        assert_eq!(
            fit(&first_repeats).unwrap_err(),
            FitError::NoSecondRepeatPurchase
        );
        let bad = [BgNbdRow {
            x: 1,
            t_x: 12.0,
            t: 10.0,
            weight: 1.0,
        }];
        assert!(matches!(fit(&bad), Err(FitError::InvalidRow(_))));
    }
}
