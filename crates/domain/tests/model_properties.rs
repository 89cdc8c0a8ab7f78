//! Property tests of the models: no panics, finite likelihoods, scores in
//! range and consistent with their definitions, whatever the population.

use patron_domain::models::{
    FitError,
    bgnbd::{self, BgNbdParams, BgNbdRow},
    gamma_gamma::{self, GammaGammaParams, GammaGammaRow},
    scores::{
        ChurnRisk, CustomerScores, CustomerSignals, FittedModel, LifecycleStage, ModelSettings,
        TIMING_REASONS, ValueTier, score_customer, score_population,
        score_population_with_baseline,
    },
    summary::{CustomerSummary, Purchase, summarize},
};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// One customer's summary straight from the data convention of models.md,
/// written for clarity: the purchases up to `as_of`, grouped by day.
fn summary_by_definition(
    customer: u32,
    purchases: &[Purchase],
    as_of: i32,
) -> Option<CustomerSummary> {
    let mine: Vec<&Purchase> = purchases
        .iter()
        .filter(|p| p.customer == customer && p.day <= as_of)
        .collect();
    let mut occasions: BTreeMap<i32, i128> = BTreeMap::new();
    for p in &mine {
        *occasions.entry(p.day).or_default() += i128::from(p.amount_nanos);
    }
    let days: Vec<i32> = occasions.keys().copied().collect();
    let (&first_day, &last_day) = (days.first()?, days.last()?);
    let x = days.len() as u32 - 1;
    let sum = |keep: &dyn Fn(&Purchase) -> bool, cost: bool| -> i128 {
        mine.iter()
            .filter(|p| keep(p))
            .map(|p| i128::from(if cost { p.cost_nanos } else { p.amount_nanos }))
            .sum()
    };
    let repeat_total: i128 = occasions.values().skip(1).sum();
    Some(CustomerSummary {
        customer,
        transactions: mine.len() as u32,
        total_nanos: sum(&|_| true, false),
        total_cost_nanos: sum(&|_| true, true),
        first_day,
        last_day,
        x,
        t_x: f64::from(last_day - first_day),
        t: f64::from(as_of - first_day),
        repeat_mean_value: if x > 0 {
            repeat_total as f64 / 1e9 / f64::from(x)
        } else {
            0.0
        },
        first_gap: days.get(1).map(|d| f64::from(d - first_day)),
        trailing_365_nanos: sum(&|p| as_of - p.day < 365, false),
        trailing_365_cost_nanos: sum(&|p| as_of - p.day < 365, true),
        recent_180_nanos: sum(&|p| as_of - p.day < 180, false),
        prior_180_nanos: sum(&|p| (180..360).contains(&(as_of - p.day)), false),
    })
}

fn bg_row() -> impl Strategy<Value = BgNbdRow> {
    (0u32..60, 0.0f64..500.0, 0.0f64..500.0, 1u32..5).prop_map(|(x, a, b, w)| {
        let t = a.max(b);
        let t_x = if x == 0 { 0.0 } else { a.min(b) };
        BgNbdRow {
            x,
            t_x,
            t,
            weight: f64::from(w),
        }
    })
}

fn params() -> impl Strategy<Value = BgNbdParams> {
    (1e-3f64..50.0, 1e-3f64..500.0, 1e-3f64..50.0, 1e-3f64..50.0)
        .prop_map(|(r, alpha, a, b)| BgNbdParams { r, alpha, a, b })
}

/// A fixed model, for properties of scoring rather than of fitting.
const MODEL: FittedModel = FittedModel {
    bg_nbd: BgNbdParams {
        r: 0.5,
        alpha: 20.0,
        a: 0.8,
        b: 2.5,
    },
    gamma_gamma: GammaGammaParams {
        p: 6.0,
        q: 4.0,
        v: 15.0,
    },
};

/// (customer, day, units) as purchases costing `cost_nanos` per unit.
fn priced(purchases: Vec<(u32, i32, i64)>, cost_nanos: i64) -> Vec<Purchase> {
    purchases
        .into_iter()
        .map(|(customer, day, units)| Purchase {
            customer,
            day,
            amount_nanos: units * 1_000_000_000,
            cost_nanos: units * cost_nanos,
        })
        .collect()
}

/// Every MEDIUM or HIGH churn risk carries a reason from the purchase
/// history (timing or the base rate), and the timing reasons are consistent:
/// OVERDUE (a repeat buyer past their own rhythm) is the milder LONG_SILENCE,
/// never both; LOW_RETURN_RATE only where no timing reason applies.
fn churn_is_explained(s: &CustomerScores, x: u32) -> bool {
    let has = |code: &str| s.churn_reasons.contains(&code);
    let timing = TIMING_REASONS.iter().any(|r| has(r));
    let elevated = s.churn_risk != ChurnRisk::Low;
    (!elevated || timing || has("LOW_RETURN_RATE"))
        && !(has("LOW_RETURN_RATE") && (timing || !elevated))
        && !(has("OVERDUE") && (has("LONG_SILENCE") || x == 0))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn bgnbd_log_likelihood_is_finite(p in params(), rows in proptest::collection::vec(bg_row(), 1..50)) {
        let (ll, grad) = bgnbd::log_likelihood_and_gradient(&p, &rows);
        prop_assert!(ll.is_finite(), "{ll}");
        // With repeat purchases the likelihood includes the density of t_x and
        // may exceed 1 (e.g. 22 purchases all at t_x = 0); with none it is the
        // probability of no repeat purchase in T, so at most 1.
        if rows.iter().all(|r| r.x == 0) {
            prop_assert!(ll <= 1e-9 || rows.iter().any(|r| r.t == 0.0), "a probability is at most 1: {ll}");
        }
        prop_assert!(grad.iter().all(|g| g.is_finite()));
    }

    #[test]
    fn bgnbd_fit_never_panics(rows in proptest::collection::vec(bg_row(), 0..40)) {
        if let Ok(fit) = bgnbd::fit(&rows) {
            let p = fit.params;
            prop_assert!(p.r > 0.0 && p.alpha > 0.0 && p.a > 0.0 && p.b > 0.0);
            prop_assert!(fit.log_likelihood.is_finite());
        }
    }

    #[test]
    fn predictions_are_sane(p in params(), row in bg_row()) {
        let alive = p.p_alive(row.x, row.t_x, row.t);
        prop_assert!((0.0..=1.0).contains(&alive));
        if let Some(e) = p.conditional_expected_purchases(365.0, row.x, row.t_x, row.t) {
            prop_assert!(e >= 0.0 && e.is_finite());
        }
    }

    #[test]
    fn gamma_gamma_is_finite_and_fit_never_panics(
        rows in proptest::collection::vec((1u32..30, 0.01f64..5000.0, 1u32..4), 0..40),
        p in 0.01f64..50.0, q in 0.01f64..50.0, v in 0.01f64..500.0,
    ) {
        let rows: Vec<GammaGammaRow> = rows.into_iter().map(|(x, m, w)| GammaGammaRow { x, mean_value: m, weight: f64::from(w) }).collect();
        let g = GammaGammaParams { p, q, v };
        prop_assert!(gamma_gamma::log_likelihood(&g, &rows).is_finite());
        let value = g.conditional_expected_value(rows.first().map_or(1, |r| r.x), rows.first().map_or(10.0, |r| r.mean_value));
        prop_assert!(value.is_finite() && value > 0.0);
        let _ = gamma_gamma::fit(&rows);
    }

    /// Purchases drawn the way test data usually is (a few per customer on
    /// uniform random days, uniform random amounts) has no heterogeneity to
    /// speak of: the likelihoods have no interior maximum and the shape
    /// parameters run off (see `SHAPE_MIN`). Every such population with a
    /// second repeat purchase must still be fitted, never an error (one
    /// customer too), and give predictions in range for every customer; the
    /// spend model needs one repeat buyer.
    #[test]
    fn uniformly_random_populations_are_always_fitted(
        customers in proptest::collection::vec(
            (proptest::collection::vec((0.0f64..1.0, 1.0f64..200.0), 1..12), 0.0f64..1.0),
            1..150,
        ),
        span in 30.0f64..1500.0,
    ) {
        let mut rows = Vec::new();
        let mut spend = Vec::new();
        for (purchases, _) in &customers {
            // Occasions are whole days; amounts on one day add up.
            let mut days: BTreeMap<i64, f64> = BTreeMap::new();
            for &(at, amount) in purchases {
                *days.entry((at * span) as i64).or_default() += amount;
            }
            let (first, last) = (*days.keys().next().unwrap(), *days.keys().last().unwrap());
            let x = days.len() as u32 - 1;
            rows.push(BgNbdRow { x, t_x: (last - first) as f64, t: span.floor() - first as f64, weight: 1.0 });
            if x > 0 {
                let mean = days.values().skip(1).sum::<f64>() / f64::from(x);
                spend.push(GammaGammaRow { x, mean_value: mean, weight: 1.0 });
            }
        }
        prop_assume!(!spend.is_empty());
        let fit = bgnbd::fit(&rows);
        if rows.iter().any(|r| r.x >= 2) {
            prop_assert!(fit.is_ok(), "{fit:?} on {rows:?}");
            let p = fit.unwrap().params;
            for r in &rows {
                let alive = p.p_alive(r.x, r.t_x, r.t);
                let e = p.conditional_expected_purchases(365.0, r.x, r.t_x, r.t);
                prop_assert!((0.0..=1.0).contains(&alive), "{alive} {p:?} {r:?}");
                prop_assert!(e.is_some_and(|e| e.is_finite() && e >= 0.0), "{e:?} {p:?} {r:?}");
            }
        } else {
            // Only first repeat purchases: the dropout is not identified.
            prop_assert_eq!(fit.unwrap_err(), FitError::NoSecondRepeatPurchase);
        }
        {
            // One repeat buyer included: the fixed-price stand-in at its mean.
            let g = gamma_gamma::fit(&spend);
            prop_assert!(g.is_ok(), "{g:?} on {spend:?}");
            let g = g.unwrap().params;
            let (low, high) = spend.iter().fold((f64::MAX, 0.0f64), |(l, h), r| (l.min(r.mean_value), h.max(r.mean_value)));
            for r in &spend {
                // A weighted mean of the population mean and the customer's
                // own: within the range of the customers' means.
                let value = g.conditional_expected_value(r.x, r.mean_value);
                prop_assert!(value >= low * (1.0 - 1e-9) && value <= high * (1.0 + 1e-9), "{value} {g:?} {r:?}");
            }
        }
    }

    /// Spend is fitted the same in any currency unit: multiplying every
    /// amount by c (cents to dong) multiplies every expected value by c,
    /// whether the fit is interior or at the shape bound (where v reaches
    /// 10^13 for amounts in the millions: such fits used to be refused).
    #[test]
    fn spend_fits_do_not_depend_on_the_currency_unit(
        rows in proptest::collection::vec((1u32..12, 1.0f64..500.0), 1..120),
        scale in prop_oneof![Just(1e-3), Just(100.0), Just(1e4), Just(1e7)],
    ) {
        let base: Vec<GammaGammaRow> = rows.iter().map(|&(x, m)| GammaGammaRow { x, mean_value: m, weight: 1.0 }).collect();
        let scaled: Vec<GammaGammaRow> = base.iter().map(|r| GammaGammaRow { mean_value: r.mean_value * scale, ..*r }).collect();
        let (a, b) = (gamma_gamma::fit(&base), gamma_gamma::fit(&scaled));
        prop_assert!(a.is_ok() && b.is_ok(), "{a:?} / {b:?}");
        let (a, b) = (a.unwrap(), b.unwrap());
        // The predictions, not the parameters: where a shape is large the
        // likelihood is flat along it, and two fits may stop at points of it
        // as far apart as p = 2.5e5 and 10^6, with log-likelihoods 5e-9 apart,
        // predicting the same to about 1e-5.
        let near = |x: f64, y: f64| (x - y).abs() <= 1e-4 * x.abs().max(y.abs());
        for r in &base {
            let (ea, eb) = (a.params.conditional_expected_value(r.x, r.mean_value), b.params.conditional_expected_value(r.x, r.mean_value * scale));
            prop_assert!(near(ea * scale, eb), "{ea} x {scale} vs {eb}: {a:?} / {b:?}");
        }
    }

    /// Bucketing splits the customers into one range per thread and sorts
    /// each history: neither the thread count nor the input order may change
    /// a summary, and customer indexes outside 0..customers are ignored.
    #[test]
    fn summaries_follow_the_data_convention_on_any_thread_count(
        purchases in proptest::collection::vec((0u32..45, 0i32..800, -50i64..500, 0i64..300), 0..400),
        threads in 1usize..6,
        reverse in any::<bool>(),
    ) {
        let mut purchases: Vec<Purchase> = purchases
            .into_iter()
            .map(|(customer, day, units, cost)| Purchase { customer, day, amount_nanos: units * 1_000_000_000 + 7, cost_nanos: cost * 1_000_000 })
            .collect();
        if reverse {
            purchases.reverse();
        }
        let (customers, as_of) = (40, 700);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let summaries = pool.install(|| summarize(customers, &purchases, as_of));
        let expected: Vec<CustomerSummary> = (0..customers as u32)
            .filter_map(|c| summary_by_definition(c, &purchases, as_of))
            .collect();
        prop_assert_eq!(summaries, expected);
    }

    #[test]
    fn population_scores_respect_their_definitions(
        purchases in proptest::collection::vec((0u32..40, 0i32..700, 1i64..500), 1..300),
    ) {
        let purchases = priced(purchases, 400_000_000);
        let as_of = 700;
        let summaries = summarize(40, &purchases, as_of);
        let model = MODEL;
        let settings = ModelSettings::default();
        let scores = score_population(&summaries, None, Some(&model), &settings, as_of);
        prop_assert_eq!(scores.len(), summaries.len());
        let n = scores.len() as f64;
        let rank = |t: Option<ValueTier>| match t { None => -1, Some(ValueTier::Low) => 0, Some(ValueTier::Medium) => 1, Some(ValueTier::High) => 2 };
        for a in &scores {
            let larger = scores.iter().filter(|b| b.predicted_clv_365d > a.predicted_clv_365d).count() as f64;
            // Exactly the definition: HIGH when fewer than 20% have a larger
            // CLV, MEDIUM when (otherwise) fewer than 20% + 30%.
            let expected = if larger / n < 0.2 {
                ValueTier::High
            } else if larger / n < 0.2 + 0.3 {
                ValueTier::Medium
            } else {
                ValueTier::Low
            };
            prop_assert_eq!(a.value_tier, Some(expected));
            for b in &scores {
                if a.predicted_clv_365d > b.predicted_clv_365d {
                    prop_assert!(rank(a.value_tier) >= rank(b.value_tier));
                }
            }
        }
        for (s, sum) in scores.iter().zip(&summaries) {
            prop_assert!((1..=5).contains(&s.r_score) && (1..=5).contains(&s.f_score) && (1..=5).contains(&s.m_score));
            prop_assert!((0.0..=1.0).contains(&s.churn_probability));
            prop_assert!((0.0..=1.0).contains(&s.loyalty_index));
            prop_assert!(s.predicted_clv_365d.is_finite() && s.predicted_clv_365d >= 0.0);
            prop_assert_eq!(s.monetary_nanos, sum.total_nanos);
            prop_assert_eq!(s.margin_nanos, s.revenue_nanos - s.cost_nanos);
            prop_assert!(churn_is_explained(s, sum.x), "{s:?}");
            if sum.x == 0 && s.recency_days <= settings.churned_after_days {
                prop_assert_eq!(s.lifecycle, LifecycleStage::New);
            }
        }
        // Frequency scores are monotone in frequency.
        for a in &scores {
            for b in &scores {
                if a.frequency < b.frequency { prop_assert!(a.f_score <= b.f_score); }
                if a.recency_days < b.recency_days { prop_assert!(a.r_score >= b.r_score); }
            }
        }
    }

    /// Online scoring places one customer against the population's baseline;
    /// for a member whose history has not changed that is exactly its
    /// population score, and the baseline survives being stored as JSON.
    #[test]
    fn one_customer_against_the_baseline_equals_the_population_score(
        purchases in proptest::collection::vec((0u32..40, 0i32..700, 1i64..500), 1..300),
        nps in proptest::collection::vec(proptest::option::of(0u8..=10), 40),
        with_model in any::<bool>(),
    ) {
        let purchases = priced(purchases, 300_000_000);
        let as_of = 700;
        let summaries = summarize(40, &purchases, as_of);
        let signals: Vec<CustomerSignals> = summaries
            .iter()
            .map(|s| CustomerSignals { latest_nps: nps[s.customer as usize], ..Default::default() })
            .collect();
        let model = MODEL;
        let settings = ModelSettings::default();
        let model = with_model.then_some(model);
        let (scores, baseline) = score_population_with_baseline(&summaries, Some(&signals), model.as_ref(), &settings, as_of);
        let stored: patron_domain::models::scores::Baseline =
            serde_json::from_str(&serde_json::to_string(&baseline).unwrap()).unwrap();
        prop_assert_eq!(&stored, &baseline);
        for ((s, signal), population) in summaries.iter().zip(&signals).zip(&scores) {
            let alone = score_customer(s, signal, model.as_ref(), &settings, &stored, as_of);
            prop_assert_eq!(&alone, population);
        }
    }

    /// Without a model (a population without a second repeat purchase
    /// identifies none) nothing is predicted, and everything the model does
    /// not enter is what it is with one.
    #[test]
    fn without_a_model_nothing_is_predicted(
        purchases in proptest::collection::vec((0u32..40, 0i32..700, 1i64..500), 1..300),
    ) {
        let purchases = priced(purchases, 300_000_000);
        let as_of = 700;
        let summaries = summarize(40, &purchases, as_of);
        let model = MODEL;
        let settings = ModelSettings::default();
        let with = score_population(&summaries, None, Some(&model), &settings, as_of);
        let without = score_population(&summaries, None, None, &settings, as_of);
        for ((w, wo), s) in with.iter().zip(&without).zip(&summaries) {
            prop_assert_eq!((wo.expected_purchases_365d, wo.expected_occasion_value, wo.predicted_clv_365d), (0.0, 0.0, 0.0));
            prop_assert_eq!((wo.value_tier, wo.value_quadrant), (None, None));
            prop_assert!((0.0..=1.0).contains(&wo.churn_probability));
            prop_assert_eq!(wo.p_alive, 1.0 - wo.churn_probability);
            prop_assert!(churn_is_explained(wo, s.x), "{wo:?}");
            // Reasons but the one that follows the risk are the same.
            let but_base_rate = |r: &Vec<&'static str>| -> Vec<&'static str> {
                r.iter().copied().filter(|c| *c != "LOW_RETURN_RATE").collect()
            };
            prop_assert_eq!(but_base_rate(&wo.churn_reasons), but_base_rate(&w.churn_reasons));
            if s.x == 0 {
                // The one-time-buyer rule either way.
                prop_assert_eq!(wo.churn_probability, w.churn_probability);
            }
            prop_assert_eq!(
                (wo.recency_days, wo.frequency, wo.monetary_nanos, wo.r_score, wo.f_score, wo.m_score, wo.segment),
                (w.recency_days, w.frequency, w.monetary_nanos, w.r_score, w.f_score, w.m_score, w.segment)
            );
            prop_assert_eq!((wo.weighted_score, wo.historical_value, wo.simple_clv), (w.weighted_score, w.historical_value, w.simple_clv));
            prop_assert_eq!((wo.loyalty_index, wo.revenue_nanos, wo.cost_nanos, wo.margin_nanos), (w.loyalty_index, w.revenue_nanos, w.cost_nanos, w.margin_nanos));
        }
    }
}
