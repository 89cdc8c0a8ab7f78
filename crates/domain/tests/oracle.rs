//! Oracle tests: the fits reproduce published estimates, the closed forms
//! match the reference implementation, and simulated populations give back
//! the parameters they were drawn from.

use patron_domain::models::{
    bgnbd::{self, BgNbdParams, BgNbdRow},
    gamma_gamma::{self, GammaGammaParams, GammaGammaRow},
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Gamma};

struct Cdnow {
    bg: Vec<BgNbdRow>,
    gg: Vec<GammaGammaRow>,
}

fn cdnow() -> Cdnow {
    let text = include_str!("data/cdnow_customers_summary_with_transactions.csv");
    let mut bg = Vec::new();
    let mut gg = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<f64> = line
            .split(',')
            .map(|v| v.trim().parse().expect("number"))
            .collect();
        let (x, t_x, t, zbar) = (f[1] as u32, f[2], f[3], f[4]);
        bg.push(BgNbdRow {
            x,
            t_x,
            t,
            weight: 1.0,
        });
        if x > 0 {
            gg.push(GammaGammaRow {
                x,
                mean_value: zbar,
                weight: 1.0,
            });
        }
    }
    assert_eq!(bg.len(), 2357);
    Cdnow { bg, gg }
}

/// Equal to 3 significant digits.
fn sig3(actual: f64, published: f64) -> bool {
    let magnitude = 10f64.powf(published.abs().log10().floor() - 2.0);
    (actual - published).abs() <= 0.5 * magnitude + 1e-12
}

#[test]
fn bgnbd_reproduces_fader_hardie_lee_2005_on_cdnow() {
    let fit = bgnbd::fit(&cdnow().bg).expect("fit");
    let p = fit.params;
    // Published: r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4.
    assert!(sig3(p.r, 0.243), "r = {}", p.r);
    assert!(sig3(p.alpha, 4.41), "alpha = {}", p.alpha);
    assert!(sig3(p.a, 0.793), "a = {}", p.a);
    assert!(sig3(p.b, 2.43), "b = {}", p.b);
    assert!(
        (fit.log_likelihood - -9582.4).abs() < 0.1,
        "ll = {}",
        fit.log_likelihood
    );
    assert_eq!(fit.customers, 2357.0);
    assert_eq!(fit.repeat_customers, 946.0);
}

#[test]
fn gamma_gamma_reproduces_fader_hardie_2013_on_cdnow() {
    let fit = gamma_gamma::fit(&cdnow().gg).expect("fit");
    let g = fit.params;
    // Published: p = 6.25, q = 3.74, gamma (v) = 15.44.
    assert!(sig3(g.p, 6.25), "p = {}", g.p);
    assert!(sig3(g.q, 3.74), "q = {}", g.q);
    assert!(sig3(g.v, 15.4), "v = {}", g.v);
}

#[test]
fn closed_forms_match_the_reference_implementation() {
    // At the published parameters; values from bench/lifetimes_reference.py.
    let p = BgNbdParams {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    let cases = [
        (2, 30.43, 38.86, 1.226_028_174_767, 0.726_578_570_081),
        (0, 0.0, 38.86, 0.195_098_052_011, 1.0),
        (7, 29.43, 38.86, 3.337_053_274_851, 0.641_756_345_946),
        (1, 1.71, 38.86, 0.203_186_987_080, 0.212_100_985_377),
        (23, 37.0, 38.5, 15.215_575_253_895, 0.930_901_123_234),
    ];
    for (x, t_x, t, expected, alive) in cases {
        let e = p
            .conditional_expected_purchases(39.0, x, t_x, t)
            .expect("converges");
        assert!(
            (e - expected).abs() < 1e-6,
            "E[Y(39) | {x}, {t_x}, {t}] = {e}, expected {expected}"
        );
        let pa = p.p_alive(x, t_x, t);
        assert!(
            (pa - alive).abs() < 1e-6,
            "P(alive | {x}, {t_x}, {t}) = {pa}, expected {alive}"
        );
    }
    let e = p.expected_purchases(39.0).unwrap();
    assert!((e - 1.196_723_193_321).abs() < 1e-6, "E[X(39)] = {e}");
}

/// Where the 2F1 series is hard: one-time buyers when a + b < 1 (c of the
/// series is negative; such fits are common when almost nobody drops out,
/// like the benchmark population below), frequent buyers observed briefly
/// (z near 1, large x: the untransformed series first grows for hundreds of
/// terms), and x in the hundreds. Values of Fader, Hardie & Lee's eq. 10
/// from mpmath at 50 digits (its hyp2f1, the untransformed formula).
#[test]
fn conditional_expectations_match_high_precision_values() {
    let few_dropouts = BgNbdParams {
        r: 0.686563,
        alpha: 19.691392,
        a: 0.001455,
        b: 0.198193,
    };
    let cdnow = BgNbdParams {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };
    let cases = [
        (few_dropouts, 365.0, 0, 0.0, 30.0, 5.001_037_516_195_924),
        (few_dropouts, 365.0, 0, 0.0, 0.0, 12.596_317_997_804_42),
        (few_dropouts, 365.0, 0, 0.0, 730.0, 0.333_524_377_577_809_6),
        (
            few_dropouts,
            365.0,
            3,
            100.0,
            400.0,
            3.001_278_531_840_971_3,
        ),
        (few_dropouts, 365.0, 60, 95.0, 100.0, 184.769_483_187_976_53),
        (
            few_dropouts,
            365.0,
            200,
            290.0,
            300.0,
            228.005_098_624_067_56,
        ),
        (cdnow, 39.0, 150, 38.0, 38.86, 93.533_157_279_569_58),
        (cdnow, 365.0, 0, 0.0, 0.5, 4.018_939_056_612_454),
        (cdnow, 39.0, 400, 38.5, 38.86, 260.741_253_628_607_08),
    ];
    for (p, horizon, x, t_x, t, expected) in cases {
        let e = p
            .conditional_expected_purchases(horizon, x, t_x, t)
            .expect("converges");
        assert!(
            (e - expected).abs() <= 1e-9 * expected,
            "E[Y({horizon}) | {x}, {t_x}, {t}] under {p:?} = {e}, expected {expected}"
        );
    }
}

/// Draws BG/NBD histories: λ ~ Gamma(r, 1/α), p ~ Beta(a, b), dropout after
/// each repeat purchase, observation lengths uniform in [30, 400] days.
fn simulate_bgnbd(truth: BgNbdParams, customers: usize, seed: u64) -> Vec<BgNbdRow> {
    let rate = Gamma::new(truth.r, 1.0 / truth.alpha).unwrap();
    let dropout = Beta::new(truth.a, truth.b).unwrap();
    simulate_histories(customers, seed, |rng| {
        (rate.sample(&mut *rng), dropout.sample(&mut *rng))
    })
}

/// BG/NBD histories from each customer's (λ, p) as `draw` gives them.
fn simulate_histories(
    customers: usize,
    seed: u64,
    mut draw: impl FnMut(&mut ChaCha8Rng) -> (f64, f64),
) -> Vec<BgNbdRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..customers)
        .map(|_| {
            let (lambda, p) = draw(&mut rng);
            let t = rng.random_range(30.0..400.0f64).floor();
            let (mut x, mut t_x, mut now) = (0u32, 0.0, 0.0);
            loop {
                now += -rng.random::<f64>().max(1e-300).ln() / lambda;
                if now > t {
                    break;
                }
                x += 1;
                t_x = now;
                if rng.random_bool(p) {
                    break;
                }
            }
            BgNbdRow {
                x,
                t_x,
                t,
                weight: 1.0,
            }
        })
        .collect()
}

#[test]
fn bgnbd_recovers_simulated_parameters() {
    let truth = BgNbdParams {
        r: 0.5,
        alpha: 12.0,
        a: 0.7,
        b: 2.5,
    };
    let rows = simulate_bgnbd(truth, 40_000, 11);
    let p = bgnbd::fit(&rows).expect("fit").params;
    for (name, got, want) in [
        ("r", p.r, truth.r),
        ("alpha", p.alpha, truth.alpha),
        ("a", p.a, truth.a),
        ("b", p.b, truth.b),
    ] {
        assert!(
            (got - want).abs() / want < 0.12,
            "{name}: fitted {got}, true {want}"
        );
    }
}

/// Repeat buyers with 1 to 7 repeat occasions, each occasion's value drawn
/// from the distribution `value_of` gives the customer.
fn simulate_spend(
    customers: usize,
    seed: u64,
    mut value_of: impl FnMut(&mut ChaCha8Rng) -> Gamma<f64>,
) -> Vec<GammaGammaRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..customers)
        .map(|_| {
            let value = value_of(&mut rng);
            let x = rng.random_range(1..8u32);
            let mean = (0..x).map(|_| value.sample(&mut rng)).sum::<f64>() / f64::from(x);
            GammaGammaRow {
                x,
                mean_value: mean,
                weight: 1.0,
            }
        })
        .collect()
}

/// Populations without heterogeneity in some respect have no interior
/// maximum: the likelihood rises as a shape parameter runs off, and the fit
/// holds it at its bound (10^6). The bound must stand in for the limit
/// model: the rate and dropout probability the data was drawn from are
/// recovered as r/α and a/(a+b), and the predictions are the limit model's
/// closed forms. With the same λ and p for everyone, P(alive | x, t_x, T) =
/// 1 / (1 + p/(1-p) · e^(λ(T - t_x))) and E[Y(h) | alive] = (1 - e^(-λph)) / p.
#[test]
fn a_homogeneous_population_is_fitted_by_the_limit_model() {
    let (lambda, p) = (0.05, 0.2);
    let rows = simulate_histories(20_000, 41, |_| (lambda, p));
    let fit = bgnbd::fit(&rows).expect("a homogeneous population is a fit, not an error");
    assert!(fit.at_limit.contains(&"r"), "{fit:?}");
    let f = fit.params;
    let (rate, dropout) = (f.r / f.alpha, f.a / (f.a + f.b));
    assert!(
        (rate - lambda).abs() / lambda < 0.05,
        "rate {rate}, {fit:?}"
    );
    assert!((dropout - p).abs() / p < 0.1, "dropout {dropout}, {fit:?}");
    for (x, t_x, t) in [
        (1, 20.0, 60.0),
        (4, 100.0, 120.0),
        (9, 200.0, 380.0),
        (0, 0.0, 90.0),
    ] {
        let p_alive = if x == 0 {
            1.0
        } else {
            1.0 / (1.0 + dropout / (1.0 - dropout) * (rate * (t - t_x)).exp())
        };
        let expected = p_alive * (1.0 - (-rate * dropout * 365.0).exp()) / dropout;
        let got = f.conditional_expected_purchases(365.0, x, t_x, t).unwrap();
        assert!((f.p_alive(x, t_x, t) - p_alive).abs() < 1e-4, "x={x}");
        assert!(
            (got - expected).abs() < 1e-3 * expected,
            "x={x}: {got} vs {expected}"
        );
    }
}

/// Nobody drops out (p = 0 for everyone): the dropout shape a runs to
/// its lower bound, P(alive) is 1, and the expectations are the NBD's,
/// (r + x) / (α + T) · h, with r and α fitted as usual.
#[test]
fn a_population_where_nobody_leaves_is_fitted_by_the_nbd() {
    let rate = Gamma::new(2.0, 1.0 / 40.0).unwrap();
    let rows = simulate_histories(20_000, 43, |rng| (rate.sample(rng), 0.0));
    let fit = bgnbd::fit(&rows).expect("no dropout is a fit, not an error");
    let f = fit.params;
    // The mean dropout probability a/(a+b) is nil (a runs to its lower
    // bound, where the likelihood is flat enough for the fit to stop just
    // short of it).
    assert!(f.a / (f.a + f.b) < 1e-9, "{fit:?}");
    assert!(
        (f.r - 2.0).abs() / 2.0 < 0.12 && (f.alpha - 40.0).abs() / 40.0 < 0.12,
        "{fit:?}"
    );
    for (x, t_x, t) in [(1, 20.0, 60.0), (6, 100.0, 320.0), (0, 0.0, 90.0)] {
        let nbd = (f.r + f64::from(x)) / (f.alpha + t) * 365.0;
        let got = f.conditional_expected_purchases(365.0, x, t_x, t).unwrap();
        assert!(f.p_alive(x, t_x, t) > 1.0 - 1e-6, "x={x}");
        assert!((got - nbd).abs() < 1e-4 * nbd, "x={x}: {got} vs {nbd}");
    }
}

/// At the shape bound the expectation switches to the untransformed series
/// (Euler's would need about a·z terms): values of eq. 10 from mpmath at 60
/// digits, its series summed directly.
#[test]
fn conditional_expectations_at_the_shape_bound_match_high_precision_values() {
    let same_dropout = BgNbdParams {
        r: 0.7,
        alpha: 20.0,
        a: 3e5,
        b: 1e6,
    };
    let same_rate = BgNbdParams {
        r: 1e6,
        alpha: 2e7,
        a: 0.3,
        b: 1e6,
    };
    let same_both = BgNbdParams {
        a: 3e5,
        ..same_rate
    };
    for (p, x, t_x, t, expected) in [
        (same_dropout, 0, 0.0, 30.0, 2.162_610_942_635_644),
        (same_dropout, 5, 100.0, 200.0, 0.347_751_841_730_530_55),
        (same_dropout, 150, 190.0, 200.0, 0.012_997_566_349_654_767),
        (same_rate, 4, 80.0, 120.0, 18.249_873_087_005_25),
        (same_both, 4, 80.0, 120.0, 1.327_170_805_071_399_2),
        // a = 1, where eq. 10 is 0/0 (mpmath at a = 1 + 1e-30).
        (
            BgNbdParams {
                r: 0.243,
                alpha: 4.414,
                a: 1.0,
                b: 2.426,
            },
            2,
            30.43,
            38.86,
            4.782_736_635_319_139,
        ),
        (
            BgNbdParams {
                r: 0.7,
                alpha: 20.0,
                a: 1.0,
                b: 1.0,
            },
            0,
            0.0,
            30.0,
            1.687_266_833_326_850_5,
        ),
        // a in the thousands: Euler's series would overflow (proptest find).
        (
            BgNbdParams {
                r: 2.276_135_021_808_383_6,
                alpha: 452.038_248_330_757_4,
                a: 1_371.613_579_557_033_3,
                b: 1e6,
            },
            0,
            0.0,
            77.0,
            1.567_948_907_183_790_5,
        ),
    ] {
        let e = p.conditional_expected_purchases(365.0, x, t_x, t).unwrap();
        assert!(
            (e - expected).abs() <= 1e-9 * expected,
            "E[Y(365) | {x}, {t_x}, {t}] under {p:?} = {e}, expected {expected}"
        );
    }
}

/// Spend with no heterogeneity between customers (every transaction value
/// drawn from one Gamma(p, ν)): q is held at its bound, p is recovered, and
/// every customer's expected occasion value is the population mean p/ν,
/// whatever their own history.
#[test]
fn spend_without_heterogeneity_is_fitted_by_the_limit_model() {
    let value = Gamma::new(3.0, 10.0).unwrap();
    let rows = simulate_spend(20_000, 17, |_| value);
    let fit = gamma_gamma::fit(&rows).expect("homogeneous spend is a fit, not an error");
    assert_eq!(fit.at_limit, ["q"], "{fit:?}");
    assert!((fit.params.p - 3.0).abs() / 3.0 < 0.05, "{fit:?}");
    for (x, m) in [(0, 0.0), (1, 5.0), (3, 30.0), (7, 90.0)] {
        let e = fit.params.conditional_expected_value(x, m);
        assert!((e - 30.0).abs() < 0.02 * 30.0, "x={x}, m={m}: {e}");
    }
}

#[test]
fn gamma_gamma_recovers_simulated_parameters() {
    let truth = GammaGammaParams {
        p: 6.0,
        q: 4.0,
        v: 15.0,
    };
    let nu_dist = Gamma::new(truth.q, 1.0 / truth.v).unwrap();
    let rows = simulate_spend(30_000, 5, |rng| {
        let nu: f64 = nu_dist.sample(rng);
        Gamma::new(truth.p, 1.0 / nu).unwrap()
    });
    let g = gamma_gamma::fit(&rows).expect("fit").params;
    for (name, got, want) in [
        ("p", g.p, truth.p),
        ("q", g.q, truth.q),
        ("v", g.v, truth.v),
    ] {
        assert!(
            (got - want).abs() / want < 0.1,
            "{name}: fitted {got}, true {want}"
        );
    }
}

#[test]
fn warm_started_fits_equal_cold_fits() {
    // Force the warm-start path (sample of 2,000) on a population of 40,000.
    let rows = simulate_bgnbd(
        BgNbdParams {
            r: 0.5,
            alpha: 12.0,
            a: 0.7,
            b: 2.5,
        },
        40_000,
        23,
    );
    let cold = bgnbd::fit_with_warm_start(&rows, usize::MAX / 8)
        .expect("cold")
        .params;
    let warm = bgnbd::fit_with_warm_start(&rows, 2_000)
        .expect("warm")
        .params;
    for (got, want) in [
        (warm.r, cold.r),
        (warm.alpha, cold.alpha),
        (warm.a, cold.a),
        (warm.b, cold.b),
    ] {
        assert!(
            (got - want).abs() <= 1e-4 * want.abs(),
            "warm {warm:?} vs cold {cold:?}"
        );
    }
    let gg: Vec<GammaGammaRow> = cdnow().gg.iter().cycle().take(20_000).copied().collect();
    let cold = gamma_gamma::fit_with_warm_start(&gg, usize::MAX / 8)
        .expect("cold")
        .params;
    let warm = gamma_gamma::fit_with_warm_start(&gg, 1_000)
        .expect("warm")
        .params;
    for (got, want) in [(warm.p, cold.p), (warm.q, cold.q), (warm.v, cold.v)] {
        assert!(
            (got - want).abs() <= 1e-4 * want.abs(),
            "warm {warm:?} vs cold {cold:?}"
        );
    }
}

#[test]
fn batched_predictions_equal_per_customer_predictions() {
    let p = BgNbdParams {
        r: 0.5,
        alpha: 12.0,
        a: 0.7,
        b: 2.5,
    };
    let mut rows = simulate_bgnbd(p, 3_000, 31);
    // Fractional times take the general (sorted) path, whole days the dense table.
    rows.extend(cdnow().bg.into_iter().take(500));
    for batch in [&rows[..3_000], &rows[..]] {
        let many = p.conditional_expected_purchases_many(365.0, batch);
        for (r, e) in batch.iter().zip(many) {
            let one = p.conditional_expected_purchases(365.0, r.x, r.t_x, r.t);
            assert_eq!(e, one, "{r:?}");
        }
    }
}
