//! The Gamma-Gamma model of monetary value (Fader & Hardie 2013). A
//! customer's transaction values are Gamma(p, ν) with ν ~ Gamma(q, γ)
//! across customers (γ is called v here, as in the literature's code).
//! Fitted on customers with at least one repeat purchase: x repeat
//! occasions with mean value m.

use rayon::prelude::*;

use super::{
    FitError, MAX_LOG_SCALE, SHAPE_MAX, held_names, log_shape_bounds,
    optimize::{BoxedMinimum, bfgs_boxed},
    shape_from_log,
    special::{digamma, ln_gamma, ln_gamma_ratio},
};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GammaGammaParams {
    pub p: f64,
    pub q: f64,
    pub v: f64,
}

/// One repeat buyer (or `weight` identical ones).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaRow {
    pub x: u32,
    pub mean_value: f64,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GammaGammaFit {
    pub params: GammaGammaParams,
    /// Names of the shape parameters held at a bound (see
    /// [`super::SHAPE_MIN`]): `"p"`, `"q"`.
    pub at_limit: Vec<&'static str>,
    pub log_likelihood: f64,
    pub iterations: usize,
    pub customers: f64,
}

/// Σ weight × log-likelihood and its gradient in (p, q, v). Terms that depend
/// only on x are computed once per distinct x.
pub fn log_likelihood_and_gradient(
    g: &GammaGammaParams,
    rows: &[GammaGammaRow],
) -> (f64, [f64; 3]) {
    let max_x = rows.iter().map(|r| r.x).max().unwrap_or(0) as usize;
    // Per x: ln Γ(px+q) - ln Γ(px) - ln Γ(q) and the digammas.
    let mut lg = vec![0.0; max_x + 1];
    let mut dg_pxq = vec![0.0; max_x + 1];
    let mut dg_px = vec![0.0; max_x + 1];
    let mut present = vec![false; max_x + 1];
    for r in rows {
        present[r.x as usize] = true;
    }
    for x in 1..=max_x {
        if present[x] {
            let px = g.p * x as f64;
            // The larger argument's ratio, so a shape at its bound (10^6)
            // does not cancel two log-gammas of 1.3e7 against each other.
            lg[x] = if px > g.q {
                ln_gamma_ratio(px, g.q) - ln_gamma(g.q)
            } else {
                ln_gamma_ratio(g.q, px) - ln_gamma(px)
            };
            dg_pxq[x] = digamma(px + g.q);
            dg_px[x] = digamma(px);
        }
    }
    let dg_q = digamma(g.q);
    // ln L = lg + q·ln(v/(xm+v)) + px·ln(xm/(xm+v)) - ln m: the textbook
    // q·ln v + (px-1)·ln m + px·ln x - (px+q)·ln(xm+v) regrouped into
    // logarithms of ratios, each small where the textbook terms are huge.
    let per_row = |r: &GammaGammaRow| -> (f64, [f64; 3]) {
        let x = r.x as usize;
        let xf = f64::from(r.x);
        let px = g.p * xf;
        let xm = xf * r.mean_value;
        let denom = xm + g.v;
        let ln_v_share = -(xm / g.v).ln_1p();
        let ln_xm_share = -(g.v / xm).ln_1p();
        let ll = lg[x] + g.q * ln_v_share + px * ln_xm_share - r.mean_value.ln();
        let d_p = xf * (dg_pxq[x] - dg_px[x] + ln_xm_share);
        let d_q = dg_pxq[x] - dg_q + ln_v_share;
        let d_v = (g.q * xm / g.v - px) / denom;
        let w = r.weight;
        (w * ll, [w * d_p, w * d_q, w * d_v])
    };
    let add = |(l1, a): (f64, [f64; 3]), (l2, b): (f64, [f64; 3])| {
        (l1 + l2, [a[0] + b[0], a[1] + b[1], a[2] + b[2]])
    };
    if rows.len() < 50_000 {
        rows.iter().map(per_row).fold((0.0, [0.0; 3]), add)
    } else {
        rows.par_chunks(16_384)
            .map(|c| c.iter().map(per_row).fold((0.0, [0.0; 3]), add))
            .reduce(|| (0.0, [0.0; 3]), add)
    }
}

pub fn log_likelihood(g: &GammaGammaParams, rows: &[GammaGammaRow]) -> f64 {
    log_likelihood_and_gradient(g, rows).0
}

/// Parameters from the optimiser's coordinates (ln p, ln q, ln(p·v/q)).
///
/// The third is the log of p·v/q, about the population's mean occasion
/// value p·v/(q-1). With (ln p, ln q, ln v) the likelihood is a narrow
/// valley wherever p or q is large (the mean is pinned by the data to a
/// fraction of a percent while p and v trade off along it), and near the
/// shape bound that valley gets narrower than f64 can resolve the
/// likelihood: BFGS then stalls across it, short of the bound. Holding
/// the mean as a coordinate of its own makes the valley an axis.
fn params_of(theta: &[f64]) -> GammaGammaParams {
    GammaGammaParams {
        p: theta[0].exp(),
        q: theta[1].exp(),
        v: (theta[2] + theta[1] - theta[0]).exp(),
    }
}

fn minimize(
    data: &[GammaGammaRow],
    start: &[f64],
    inverse_hessian: Option<&[Vec<f64>]>,
) -> BoxedMinimum {
    let scale = 1.0 / data.iter().map(|r| r.weight).sum::<f64>();
    let objective = |theta: &[f64]| {
        let g = params_of(theta);
        let (ll, d) = log_likelihood_and_gradient(&g, data);
        // Gradients in ln p, ln q, ln v, then by the chain rule in the
        // optimiser's coordinates (ln v = θ2 + θ1 - θ0).
        let (dp, dq, dv) = (
            -d[0] * g.p * scale,
            -d[1] * g.q * scale,
            -d[2] * g.v * scale,
        );
        (-ll * scale, vec![dp - dv, dq + dv, dv])
    };
    let shape = log_shape_bounds();
    bfgs_boxed(
        &objective,
        start,
        inverse_hessian,
        &[shape, shape, None],
        1e-9,
        1e-15,
        1_000,
    )
}

/// Maximum-likelihood fit over repeat buyers (rows with x = 0 are ignored).
pub fn fit(rows: &[GammaGammaRow]) -> Result<GammaGammaFit, FitError> {
    fit_with_warm_start(rows, super::bgnbd::WARM_START_CUSTOMERS)
}

/// [`fit`] with an explicit warm-start sample size (exposed for tests).
pub fn fit_with_warm_start(
    rows: &[GammaGammaRow],
    warm_start_customers: usize,
) -> Result<GammaGammaFit, FitError> {
    let data: Vec<GammaGammaRow> = rows
        .iter()
        .copied()
        .filter(|r| r.x > 0 && r.weight > 0.0)
        .collect();
    if let Some(bad) = data
        .iter()
        .find(|r| !(r.mean_value.is_finite() && r.mean_value > 0.0))
    {
        return Err(FitError::InvalidRow(format!("{bad:?}")));
    }
    let customers: f64 = data.iter().map(|r| r.weight).sum();
    if data.is_empty() {
        return Err(FitError::NoRepeatPurchases);
    }
    // One repeat buyer (or several, all at one mean) is the fixed-price
    // case: all the data says about spend is one mean.
    let mean = data.iter().map(|r| r.mean_value * r.weight).sum::<f64>() / customers;
    if let Some(fit) = fixed_price(&data, mean, customers) {
        return Ok(fit);
    }
    let mut start = vec![0.0, 0.0, mean.max(1e-6).ln()];
    let mut curvature = None;
    // As for BG/NBD: warm-start large populations from a uniform sample.
    if data.len() > 4 * warm_start_customers {
        let sample: Vec<GammaGammaRow> = data
            .iter()
            .step_by(data.len() / warm_start_customers)
            .copied()
            .collect();
        let warm = minimize(&sample, &start, None);
        if warm.minimum.converged && params_of(&warm.minimum.x).v.ln().abs() <= MAX_LOG_SCALE {
            start = warm.minimum.x;
            curvature = Some(warm.minimum.inverse_hessian);
        }
    }
    let BoxedMinimum {
        minimum: m,
        at_bound,
    } = minimize(&data, &start, curvature.as_deref());
    let params = GammaGammaParams {
        p: shape_from_log(m.x[0], at_bound[0]),
        q: shape_from_log(m.x[1], at_bound[1]),
        ..params_of(&m.x)
    };
    if !m.converged || params.v.ln().abs() > MAX_LOG_SCALE || !m.value.is_finite() {
        return Err(FitError::NotConverged {
            iterations: m.iterations,
            detail: format!("{params:?}"),
        });
    }
    Ok(GammaGammaFit {
        params,
        at_limit: held_names(&["p", "q", "v"], &at_bound),
        log_likelihood: -m.value * customers,
        iterations: m.iterations,
        customers,
    })
}

/// Spread of the parameters reported for a fixed price (see [`fixed_price`]).
pub const FIXED_PRICE_P: f64 = SHAPE_MAX;

/// Every repeat buyer's mean occasion value the same (a fixed price, e.g. a
/// subscription): the likelihood grows without bound as the model closes in
/// on a point mass at that value, so the optimiser has no interior optimum
/// to find. The fit is then the limit's stand-in: p = 10^6, q = p + 1,
/// v = m, a Gamma-Gamma with mean m and a relative spread of 0.1%, under
/// which every expected occasion value, with history or without, is m. It
/// reports 0 iterations and the log-likelihood at those parameters.
fn fixed_price(data: &[GammaGammaRow], mean: f64, customers: f64) -> Option<GammaGammaFit> {
    let (low, high) = data.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| {
        (lo.min(r.mean_value), hi.max(r.mean_value))
    });
    if high - low > 1e-9 * high {
        return None;
    }
    let params = GammaGammaParams {
        p: FIXED_PRICE_P,
        q: FIXED_PRICE_P + 1.0,
        v: mean,
    };
    Some(GammaGammaFit {
        params,
        at_limit: vec!["p", "q"],
        log_likelihood: log_likelihood(&params, data),
        iterations: 0,
        customers,
    })
}

impl GammaGammaParams {
    /// E[M | x, m]: the expected value of this customer's future occasions,
    /// a weighted mean of the population mean p·v/(q-1) and the customer's own m.
    pub fn conditional_expected_value(&self, x: u32, mean_value: f64) -> f64 {
        let px = self.p * f64::from(x);
        if x == 0 || self.q <= 1.0 {
            // No own history: the population mean (defined only for q > 1).
            return if self.q > 1.0 {
                self.p * self.v / (self.q - 1.0)
            } else {
                mean_value
            };
        }
        self.p * (self.v + f64::from(x) * mean_value) / (px + self.q - 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analytic_gradient_matches_numeric() {
        let rows = [
            GammaGammaRow {
                x: 1,
                mean_value: 12.5,
                weight: 2.0,
            },
            GammaGammaRow {
                x: 4,
                mean_value: 40.0,
                weight: 1.0,
            },
        ];
        let g = GammaGammaParams {
            p: 5.0,
            q: 3.5,
            v: 14.0,
        };
        let (_, d) = log_likelihood_and_gradient(&g, &rows);
        let h = 1e-6;
        for (i, di) in d.iter().enumerate() {
            let bump = |delta: f64| {
                let mut q = g;
                match i {
                    0 => q.p += delta,
                    1 => q.q += delta,
                    _ => q.v += delta,
                }
                log_likelihood(&q, &rows)
            };
            let numeric = (bump(h) - bump(-h)) / (2.0 * h);
            assert!(
                (di - numeric).abs() < 1e-6 * numeric.abs().max(1.0),
                "{i}: {di} vs {numeric}"
            );
        }
    }

    #[test]
    fn degenerate_populations() {
        assert_eq!(fit(&[]).unwrap_err(), FitError::NoRepeatPurchases);
        assert_eq!(
            fit(&[GammaGammaRow {
                x: 0,
                mean_value: 1.0,
                weight: 9.0
            }])
            .unwrap_err(),
            FitError::NoRepeatPurchases
        );
        // A single repeat buyer: all the data says about spend is that
        // customer's mean, the fixed-price stand-in (see below).
        let single = fit(&[GammaGammaRow {
            x: 2,
            mean_value: 3.0,
            weight: 1.0,
        }])
        .expect("one repeat buyer is a fit");
        assert_eq!(single.at_limit, ["p", "q"]);
        assert!((single.params.conditional_expected_value(0, 0.0) - 3.0).abs() < 1e-9);
        assert!(matches!(
            fit(&[GammaGammaRow {
                x: 2,
                mean_value: -1.0,
                weight: 5.0
            }]),
            Err(FitError::InvalidRow(_))
        ));
    }

    #[test]
    fn a_fixed_price_expects_that_price_from_everyone() {
        // A subscription at 9.99: every repeat buyer's mean is 9.99, however
        // many occasions (and one mean a rounding error away).
        let rows = [
            GammaGammaRow {
                x: 1,
                mean_value: 9.99,
                weight: 40.0,
            },
            GammaGammaRow {
                x: 7,
                mean_value: 9.99,
                weight: 25.0,
            },
            GammaGammaRow {
                x: 30,
                mean_value: 9.99 * (1.0 + 1e-12),
                weight: 3.0,
            },
            GammaGammaRow {
                x: 0,
                mean_value: 0.0,
                weight: 100.0,
            },
        ];
        let fit = fit(&rows).expect("a fixed price is a fit, not an error");
        assert_eq!(fit.iterations, 0);
        assert_eq!(fit.customers, 68.0);
        assert!(fit.log_likelihood.is_finite());
        for x in [0, 1, 2, 7, 30, 1_000] {
            let e = fit
                .params
                .conditional_expected_value(x, if x == 0 { 0.0 } else { 9.99 });
            assert!((e - 9.99).abs() < 1e-9, "x = {x}: {e}");
        }
        // Any spread at all is fitted as usual.
        let varied = [
            GammaGammaRow {
                x: 1,
                mean_value: 9.99,
                weight: 40.0,
            },
            GammaGammaRow {
                x: 3,
                mean_value: 12.5,
                weight: 25.0,
            },
            GammaGammaRow {
                x: 2,
                mean_value: 8.0,
                weight: 30.0,
            },
        ];
        assert!(fit_with_warm_start(&varied, 1_000).map_or(true, |f| f.iterations > 0));
    }
}
