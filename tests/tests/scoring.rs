//! The scoring service end to end: its read model follows the profile feed,
//! and its fitted models equal the domain models on the same data.

use std::time::Duration;

use patron_domain::models::{
    bgnbd::{self, BgNbdParams, BgNbdRow},
    gamma_gamma::{self, GammaGammaParams, GammaGammaRow},
    scores::{FittedModel, ModelSettings, score_population},
    summary::{Purchase, summarize},
};
use patron_tests::{
    TestApp, backend_tests,
    pb::{common::Money, profile as profile_pb, scoring as pb},
    violated_fields,
};
use prost_types::Timestamp;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tonic::Code;

const START_DAY: i64 = 20_000; // 2024-10-04
const END_DAY: i64 = 20_500;

/// (customer index, day, cents) purchases of a BG/NBD-like population, some
/// customers buying twice on one day (one occasion).
fn population(customers: usize, seed: u64) -> Vec<(usize, i64, i64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for c in 0..customers {
        let rate: f64 = rng.random_range(0.005..0.08);
        let drop: f64 = rng.random_range(0.05..0.5);
        // Customers differ in spend level, as Gamma-Gamma assumes.
        let level: f64 = rng.random_range(5.0..150.0f64).powf(1.3);
        let mut day = START_DAY + rng.random_range(0..400);
        loop {
            out.push((c, day, (level * rng.random_range(60.0..140.0)) as i64));
            if rng.random_bool(0.1) {
                out.push((c, day, (level * rng.random_range(10.0..50.0)) as i64));
            }
            if rng.random_bool(drop) {
                break;
            }
            day += (-rng.random::<f64>().max(1e-9).ln() / rate).ceil() as i64;
            if day > END_DAY {
                break;
            }
        }
    }
    out
}

async fn ingest(app: &TestApp, ids: &[String], purchases: &[(usize, i64, i64)], offset: usize) {
    let transactions: Vec<_> = purchases
        .iter()
        .enumerate()
        .map(|(k, (c, day, cents))| profile_pb::Transaction {
            id: format!("s-{}", k + offset),
            customer_id: ids[*c].clone(),
            occurred_at: Some(Timestamp {
                seconds: day * 86_400 + 43_200,
                nanos: 0,
            }),
            amount: Some(Money {
                currency_code: "EUR".into(),
                units: cents / 100,
                nanos: ((cents % 100) * 10_000_000) as i32,
            }),
            quantity: 1,
            ..Default::default()
        })
        .collect();
    for chunk in transactions.chunks(2_000) {
        app.profile()
            .record_transactions(profile_pb::RecordTransactionsRequest {
                transactions: chunk.to_vec(),
            })
            .await
            .expect("record");
    }
}

async fn customers(app: &TestApp, n: usize) -> Vec<String> {
    let batch = (0..n)
        .map(|i| profile_pb::Customer {
            external_id: format!("sc-{i}"),
            ..Default::default()
        })
        .collect();
    app.profile()
        .upsert_customers(profile_pb::UpsertCustomersRequest { customers: batch })
        .await
        .unwrap()
        .into_inner()
        .customers
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// The domain models fitted directly on the generated data.
fn expected(
    purchases: &[(usize, i64, i64)],
    customers: usize,
    as_of_day: i64,
) -> (bgnbd::BgNbdFit, gamma_gamma::GammaGammaFit) {
    let p: Vec<Purchase> = purchases
        .iter()
        .map(|(c, day, cents)| Purchase {
            customer: *c as u32,
            day: *day as i32,
            amount_nanos: cents * 10_000_000,
            cost_nanos: 0,
        })
        .collect();
    let s = summarize(customers, &p, as_of_day as i32);
    let rows: Vec<BgNbdRow> = s.iter().map(|s| s.bg_nbd_row()).collect();
    let gg: Vec<GammaGammaRow> = s
        .iter()
        .filter(|s| s.x > 0)
        .map(|s| GammaGammaRow {
            x: s.x,
            mean_value: s.repeat_mean_value,
            weight: 1.0,
        })
        .collect();
    (bgnbd::fit(&rows).unwrap(), gamma_gamma::fit(&gg).unwrap())
}

/// The scores of `ids`, every one of which must have one.
async fn every_score(app: &TestApp, ids: &[String]) -> Vec<pb::CustomerScore> {
    let answer = app
        .scoring()
        .batch_get_scores(pb::BatchGetScoresRequest {
            customer_ids: ids.to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer.missing_ids.is_empty(),
        "not scored: {:?}",
        answer.missing_ids
    );
    answer.scores
}

/// A money amount as a number (0 when absent).
fn amount(m: Option<&Money>) -> f64 {
    m.map_or(0.0, |m| m.units as f64 + f64::from(m.nanos) / 1e9)
}

/// Creates a customer without purchases; its id.
async fn new_lead(app: &TestApp, external_id: &str) -> String {
    app.profile()
        .create_customer(profile_pb::CreateCustomerRequest {
            customer: Some(profile_pb::Customer {
                external_id: external_id.into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

/// Records one purchase of `units` EUR, now.
async fn buy_now(app: &TestApp, customer: &str, transaction: &str, units: i64) {
    buy_days_ago(app, customer, transaction, units, 0).await
}

async fn buy_days_ago(app: &TestApp, customer: &str, transaction: &str, units: i64, days: i64) {
    app.profile()
        .record_transactions(profile_pb::RecordTransactionsRequest {
            transactions: vec![profile_pb::Transaction {
                id: transaction.into(),
                customer_id: customer.into(),
                occurred_at: Some(Timestamp {
                    seconds: chrono::Utc::now().timestamp() - days * 86_400,
                    nanos: 0,
                }),
                amount: Some(Money {
                    currency_code: "EUR".into(),
                    units,
                    nanos: 0,
                }),
                quantity: 1,
                category: "toys".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
}

/// The customer's score once it exists and `ready` holds (online scoring
/// follows the feed). Panics after 30 s.
async fn score_once(
    app: &TestApp,
    customer: &str,
    ready: impl Fn(&pb::CustomerScore) -> bool,
) -> pb::CustomerScore {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let score = app
            .scoring()
            .get_score(pb::GetScoreRequest {
                customer_id: customer.into(),
            })
            .await;
        if let Ok(score) = score {
            let score = score.into_inner().score;
            if ready(&score) {
                return score;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "customer {customer} was not scored as expected online"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Fits until the service's read model has caught up with what was ingested.
async fn fit_when_caught_up(
    app: &TestApp,
    request: pb::FitModelRequest,
    want: &bgnbd::BgNbdFit,
) -> pb::ModelFit {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let fit = app.scoring().fit_model(request).await;
        if let Ok(fit) = &fit {
            let got = fit.get_ref().bg_nbd.unwrap();
            if close(got.r, want.params.r)
                && close(got.alpha, want.params.alpha)
                && close(got.a, want.params.a)
                && close(got.b, want.params.b)
            {
                return fit.get_ref().clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read model did not converge to the expected fit: {fit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stored score whose bytes are `score`, for tests of the store itself.
fn stored_score(id: &str, score: &str) -> patron_store::scoring::ScoreRow {
    patron_store::scoring::ScoreRow {
        customer_id: id.into(),
        // champions, high, star, low, active
        labels: [1, 3, 1, 1, 3],
        score: score.as_bytes().to_vec().into(),
    }
}

backend_tests! {
    async fn fits_equal_the_domain_models_and_survive_a_restart(app: TestApp) {
        let err = app.scoring().get_model(pb::GetModelRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = app.scoring().fit_model(pb::FitModelRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "nothing to fit yet");
        // Nobody to score: the recompute tries a fit, finds nothing to fit
        // and scores the empty population without a model.
        let mut empty = app.scoring().recompute_scores(pb::RecomputeScoresRequest::default()).await.unwrap().into_inner();
        let done = empty.message().await.unwrap().expect("the final progress");
        assert_eq!((done.done, done.total, done.model_version.as_str()), (0, 0, ""));
        assert!(empty.message().await.unwrap().is_none());
        let err = app.scoring().get_model(pb::GetModelRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "a failed fit stores no model");

        let n = 500;
        let ids = customers(&app, n).await;
        let purchases = population(n, 7);
        let half = purchases.len() / 2;
        ingest(&app, &ids, &purchases[..half], 0).await;
        // Restart while the feed is being consumed: nothing lost, nothing counted twice.
        let app = app.restart().await;
        ingest(&app, &ids, &purchases[half..], half).await;

        let as_of = Timestamp { seconds: END_DAY * 86_400, nanos: 0 };
        let (bg, gg) = expected(&purchases, n, END_DAY);
        let fit = fit_when_caught_up(&app, pb::FitModelRequest { as_of: Some(as_of), holdout_end: None }, &bg).await;
        assert_eq!(fit.customers, bg.customers as i64);
        assert_eq!(fit.repeat_customers, bg.repeat_customers as i64);
        assert!(close(fit.log_likelihood, bg.log_likelihood));
        let g = fit.gamma_gamma.unwrap();
        assert!(close(g.p, gg.params.p) && close(g.q, gg.params.q) && close(g.v, gg.params.v), "{g:?} vs {:?}", gg.params);
        assert!(fit.converged);

        let latest = app.scoring().get_model(pb::GetModelRequest {}).await.unwrap().into_inner();
        assert_eq!(latest.model_version, fit.model_version);

        // Scores: the service equals the domain scorer on the same data and model.
        let mut progress = app
            .scoring()
            .recompute_scores(pb::RecomputeScoresRequest { as_of: Some(as_of) })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(m) = progress.message().await.unwrap() {
            assert!(m.done <= m.total);
            last = Some(m);
        }
        let last = last.expect("progress");
        assert_eq!((last.done, last.total), (n as i64, n as i64));
        assert_eq!(last.model_version, fit.model_version);

        let p: Vec<Purchase> = purchases
            .iter()
            .map(|(c, day, cents)| Purchase { customer: *c as u32, day: *day as i32, amount_nanos: cents * 10_000_000, cost_nanos: 0 })
            .collect();
        let summaries = summarize(n, &p, END_DAY as i32);
        let bgp = fit.bg_nbd.unwrap();
        let model = FittedModel {
            bg_nbd: BgNbdParams { r: bgp.r, alpha: bgp.alpha, a: bgp.a, b: bgp.b },
            gamma_gamma: GammaGammaParams { p: g.p, q: g.q, v: g.v },
        };
        let domain = score_population(&summaries, None, Some(&model), &ModelSettings::default(), END_DAY as i32);
        for c in [0usize, 7, 123, 499] {
            let want = domain.iter().find(|s| s.customer as usize == c).unwrap();
            let got = app.scoring().get_score(pb::GetScoreRequest { customer_id: ids[c].clone() }).await.unwrap().into_inner().score;
            let rfm = got.rfm.unwrap();
            assert_eq!((rfm.r_score, rfm.f_score, rfm.m_score), (i32::from(want.r_score), i32::from(want.f_score), i32::from(want.m_score)));
            assert_eq!(rfm.segment, want.segment.as_str());
            assert_eq!(rfm.frequency, i64::from(want.frequency));
            let clv = got.clv.unwrap();
            assert!(close(clv.p_alive, want.p_alive) && close(clv.expected_purchases_365d, want.expected_purchases_365d));
            assert!(close(got.churn.unwrap().probability, want.churn_probability));
            assert!(close(got.loyalty_index, want.loyalty_index));
            assert_eq!(got.model_version, fit.model_version);
            assert_eq!(rfm.monetary.unwrap().currency_code, "EUR");
        }
        let dist = app.scoring().get_score_distribution(pb::GetScoreDistributionRequest {}).await.unwrap().into_inner();
        assert_eq!(dist.customers, n as i64);
        for bucket in &dist.rfm_segments {
            let want = domain.iter().filter(|s| s.segment.as_str() == bucket.key).count() as i64;
            assert_eq!(bucket.count, want, "segment {}", bucket.key);
        }
        assert_eq!(dist.rfm_segments.iter().map(|b| b.count).sum::<i64>(), n as i64);
        let high = domain.iter().filter(|s| s.value_tier == Some(patron_domain::models::scores::ValueTier::High)).count() as i64;
        assert_eq!(dist.value_tiers.iter().find(|b| b.key == "VALUE_TIER_HIGH").map_or(0, |b| b.count), high);
        assert_eq!(dist.lifecycle_stages.iter().map(|b| b.count).sum::<i64>(), n as i64);

        // Every customer's churn reasons (the codes a CRM user reads), as
        // the domain gives them, and none of the elevated risks unexplained.
        let all = app.scoring().batch_get_scores(pb::BatchGetScoresRequest { customer_ids: ids.clone() }).await.unwrap().into_inner();
        assert_eq!(all.scores.len(), domain.len());
        for want in &domain {
            let got = all.scores.iter().find(|s| s.customer_id == ids[want.customer as usize]).unwrap();
            let churn = got.churn.as_ref().unwrap();
            assert_eq!(churn.reasons, want.churn_reasons, "{got:?}");
            assert!(churn.risk == pb::ChurnRisk::Low as i32 || !churn.reasons.is_empty(), "{got:?}");
        }

        let batch = app
            .scoring()
            .batch_get_scores(pb::BatchGetScoresRequest { customer_ids: vec![ids[3].clone(), "nobody".into(), ids[4].clone()] })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(batch.scores.iter().map(|s| s.customer_id.clone()).collect::<Vec<_>>(), [ids[3].clone(), ids[4].clone()]);
        assert_eq!(batch.missing_ids, ["nobody"]);
        let err = app.scoring().get_score(pb::GetScoreRequest { customer_id: "nobody".into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = app.scoring().get_score(pb::GetScoreRequest { customer_id: String::new() }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["customer_id"]);

        // Holdout: calibrate up to day 20,350, compare with (20,350, 20,500].
        let mid = 20_350;
        let (bg_mid, _) = expected(&purchases, n, mid);
        let holdout = fit_when_caught_up(
            &app,
            pb::FitModelRequest { as_of: Some(Timestamp { seconds: mid * 86_400, nanos: 0 }), holdout_end: Some(as_of) },
            &bg_mid,
        )
        .await
        .holdout
        .expect("holdout");
        let mut first_day = vec![i64::MAX; n];
        for (c, day, _) in &purchases {
            first_day[*c] = first_day[*c].min(*day);
        }
        let mut days: Vec<(usize, i64)> = purchases
            .iter()
            .filter(|(c, day, _)| *day > mid && *day <= END_DAY && first_day[*c] <= mid)
            .map(|(c, day, _)| (*c, *day))
            .collect();
        days.sort_unstable();
        days.dedup();
        assert_eq!(holdout.actual_purchases, days.len() as i64, "occasions, not transactions");
        let calibrated = first_day.iter().filter(|d| **d <= mid).count() as i64;
        assert_eq!(holdout.buckets.iter().map(|b| b.customers).sum::<i64>(), calibrated);
        assert!(holdout.predicted_purchases > 0.0);

        let err = app
            .scoring()
            .fit_model(pb::FitModelRequest { as_of: Some(as_of), holdout_end: Some(Timestamp { seconds: mid * 86_400, nanos: 0 }) })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&err), ["holdout_end"]);
    }

    async fn a_fixed_price_business_is_scored(app: TestApp) {
        // Every purchase at 9.99: no spread for Gamma-Gamma to fit (before,
        // FitModel failed to converge and nobody could be scored).
        let ids = patron_tests::seed_buyers_paying(&app, 80, 17, Some(999)).await;
        patron_tests::score_everyone(&app, &ids).await;
        let model = app.scoring().get_model(pb::GetModelRequest {}).await.unwrap().into_inner();
        let gg = model.gamma_gamma.unwrap();
        assert_eq!((gg.p, gg.q), (1e6, 1e6 + 1.0), "{gg:?}");
        assert!(close(gg.v, 9.99), "{gg:?}");
        assert!(model.gamma_gamma_log_likelihood.is_finite());
        for score in &every_score(&app, &ids).await {
            let clv = score.clv.as_ref().unwrap();
            let value = amount(clv.expected_occasion_value.as_ref());
            assert!((value - 9.99).abs() < 1e-6, "{}: {value}", score.customer_id);
        }
    }

    async fn a_population_without_heterogeneity_is_scored(app: TestApp) {
        // Purchases drawn uniformly at random, as test data usually is: no
        // customer buys faster or spends more than another, so the
        // likelihoods rise without bound as shape parameters run off (before,
        // FitModel answered FAILED_PRECONDITION on nearly every such
        // population, and nobody could be scored).
        let ids = patron_tests::seed_uniform_buyers(&app, 60, 23).await;
        patron_tests::score_everyone(&app, &ids).await;
        let model = app.scoring().get_model(pb::GetModelRequest {}).await.unwrap().into_inner();
        assert!(model.converged, "{model:?}");
        // Spend is uniform for everyone: no heterogeneity in it.
        assert!(model.parameters_at_limit.contains(&"gamma_gamma.q".to_string()), "{model:?}");
        let gg = model.gamma_gamma.unwrap();
        assert_eq!(gg.q, patron_domain::models::SHAPE_MAX, "{gg:?}");
        for score in &every_score(&app, &ids).await {
            let clv = score.clv.as_ref().unwrap();
            assert!((0.0..=1.0).contains(&clv.p_alive), "{score:?}");
            assert!(clv.expected_purchases_365d.is_finite() && clv.expected_purchases_365d >= 0.0, "{score:?}");
            // Amounts are uniform on 5..200 EUR: every customer's expected
            // occasion value is near the population mean, whatever their own.
            let value = amount(clv.expected_occasion_value.as_ref());
            assert!((60.0..150.0).contains(&value), "{}: {value}", score.customer_id);
            assert!(amount(clv.predicted_clv_365d.as_ref()).is_finite());
        }
    }

    async fn a_shops_first_customer_is_scored(app: TestApp) {
        // One customer, three purchases: the models cannot tell customers
        // apart, but one history still has a maximum-likelihood reading (the
        // limit model: one rate, one dropout probability, one spend), so
        // FitModel and RecomputeScores answer instead of FAILED_PRECONDITION.
        let ids = patron_tests::seed_histories(&app, 1, 5, |_| vec![(-90, 2_500), (-60, 4_000), (-30, 3_000)]).await;
        patron_tests::score_everyone(&app, &ids).await;
        let model = app.scoring().get_model(pb::GetModelRequest {}).await.unwrap().into_inner();
        assert_eq!((model.customers, model.repeat_customers), (1, 1), "{model:?}");
        assert!(model.parameters_at_limit.contains(&"bg_nbd.r".to_string()), "{model:?}");
        let score = app.scoring().get_score(pb::GetScoreRequest { customer_id: ids[0].clone() }).await.unwrap().into_inner().score;
        let clv = score.clv.unwrap();
        // Two repeat purchases 30 days apart, the last 30 days ago: about
        // one purchase a month while alive, and alive is likely.
        assert!((0.3..=1.0).contains(&clv.p_alive), "{clv:?}");
        assert!((1.0..13.0).contains(&clv.expected_purchases_365d), "{clv:?}");
        // The spend model has one repeat buyer: its mean, 35.00.
        let value = clv.expected_occasion_value.unwrap();
        assert_eq!((value.units, value.nanos), (35, 0), "{value:?}");
    }

    async fn a_population_without_repeat_purchases_is_scored_until_a_model_can_be_fitted(app: TestApp) {
        // Every customer has bought once (a new shop, or an import of first
        // orders): nothing identifies the purchase models, so FitModel is
        // refused, but RecomputeScores (called without FitModel, as a client
        // new to the API would) still scores everyone without a model.
        // Days ago, none within a day of the 180-day and 365-day limits (a
        // recompute just after midnight sees every purchase a day older).
        let days: Vec<i64> = (0..30).map(|i| -13 * i - 3).collect();
        let mut next = days.iter();
        let ids = patron_tests::seed_histories(&app, days.len(), 3, |rng| {
            vec![(*next.next().unwrap(), rng.random_range(500..20_000))]
        })
        .await;
        patron_tests::recompute_until_scored(&app, &ids).await;
        let err = app.scoring().fit_model(pb::FitModelRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(app.scoring().get_model(pb::GetModelRequest {}).await.unwrap_err().code(), Code::NotFound);
        // The one-time-buyer rule with no repeat buyer: a share
        // (0 + 1) / (n + 2) of the customers observed for 180 days or more
        // come back, so each is churned with 1 minus that.
        let observed = days.iter().filter(|d| **d <= -180).count() as f64;
        let churn = 1.0 - 1.0 / (observed + 2.0);
        let scores = every_score(&app, &ids).await;
        for (score, day) in scores.iter().zip(&days) {
            assert_eq!(score.model_version, "", "{score:?}");
            let rfm = score.rfm.as_ref().unwrap();
            assert!((-day..=1 - day).contains(&rfm.recency_days), "{score:?}");
            assert_eq!((rfm.frequency, rfm.f_score), (1, 1), "{score:?}");
            let clv = score.clv.as_ref().unwrap();
            assert_eq!(clv.expected_purchases_365d, 0.0);
            assert_eq!(amount(clv.predicted_clv_365d.as_ref()), 0.0);
            let c = score.churn.as_ref().unwrap();
            assert!(close(c.probability, churn), "{c:?} vs {churn}");
            assert!(close(clv.p_alive, 1.0 - churn), "{clv:?}");
            assert_eq!(score.value_tier, pb::ValueTier::Unspecified as i32, "tiers rank predicted CLV");
            assert_eq!(score.value_quadrant, pb::ValueQuadrant::Unspecified as i32);
            let stage = if rfm.recency_days > 365 { pb::LifecycleStage::Churned } else { pb::LifecycleStage::New };
            assert_eq!(score.lifecycle_stage, stage as i32, "{score:?}");
        }
        // Recency ranks: the most recent buyer has r = 5, the oldest r = 1.
        assert_eq!(scores[0].rfm.as_ref().unwrap().r_score, 5);
        assert_eq!(scores[29].rfm.as_ref().unwrap().r_score, 1);
        let dist = app.scoring().get_score_distribution(pb::GetScoreDistributionRequest {}).await.unwrap().into_inner();
        assert_eq!(dist.value_tiers.iter().map(|b| (b.key.as_str(), b.count)).collect::<Vec<_>>(), [("VALUE_TIER_UNSPECIFIED", 30)]);

        // The first repeat purchase is scored online, still without a model.
        buy_now(&app, &ids[5], "repeat-1", 30).await;
        let online = score_once(&app, &ids[5], |s| s.rfm.as_ref().unwrap().frequency == 2).await;
        let rfm = online.rfm.unwrap();
        assert!(rfm.ranks_stale && rfm.recency_days <= 1, "{rfm:?}");
        assert_eq!(online.model_version, "");
        let clv = online.clv.unwrap();
        assert!(close(clv.p_alive, 1.0 - online.churn.unwrap().probability), "{clv:?}");

        // One repeat purchase cannot tell how many customers stay after one
        // (every repeat buyer leaving at once fits best): still no model.
        patron_tests::recompute_until_scored(&app, &ids).await;
        let err = app.scoring().fit_model(pb::FitModelRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("more than one repeat purchase"), "{err:?}");
        let repeat = app.scoring().get_score(pb::GetScoreRequest { customer_id: ids[5].clone() }).await.unwrap().into_inner().score;
        assert_eq!((repeat.model_version.as_str(), repeat.rfm.as_ref().unwrap().frequency), ("", 2), "{repeat:?}");
        // Their own return counts in their favour: a chance of buying again
        // of (1 + q) / 2, not the population's q (which nobody observed for
        // 180 days has shown yet: q = 1 - churn above).
        let q = 1.0 - churn;
        assert!(close(repeat.churn.as_ref().unwrap().probability, (1.0 - q) / 2.0), "a repeat buyer who bought today: {repeat:?}");

        // A second repeat purchase (a month ago, between the other two): the
        // next recompute fits a model and uses it.
        buy_days_ago(&app, &ids[5], "repeat-2", 40, 30).await;
        score_once(&app, &ids[5], |s| s.rfm.as_ref().unwrap().frequency == 3).await;
        patron_tests::recompute_until_scored(&app, &ids).await;
        let model = app.scoring().get_model(pb::GetModelRequest {}).await.unwrap().into_inner();
        assert_eq!((model.customers, model.repeat_customers), (30, 1), "{model:?}");
        assert!(model.fitted_by_recompute, "{model:?}");
        for score in &every_score(&app, &ids).await {
            assert_eq!(score.model_version, model.model_version);
            assert_ne!(score.value_tier, pb::ValueTier::Unspecified as i32);
            assert_ne!(score.value_quadrant, pb::ValueQuadrant::Unspecified as i32);
        }

        // That model is the recompute's own, fitted on one repeat buyer: the
        // next recompute fits again on the data it scores, a second repeat
        // buyer included.
        buy_days_ago(&app, &ids[7], "repeat-3", 25, 20).await;
        buy_now(&app, &ids[7], "repeat-4", 35).await;
        score_once(&app, &ids[7], |s| s.rfm.as_ref().unwrap().frequency == 3).await;
        patron_tests::recompute_until_scored(&app, &ids).await;
        let refitted = app.scoring().get_model(pb::GetModelRequest {}).await.unwrap().into_inner();
        assert_eq!((refitted.customers, refitted.repeat_customers), (30, 2), "{refitted:?}");
        assert!(refitted.fitted_by_recompute, "{refitted:?}");
        assert_ne!(refitted.model_version, model.model_version);
        assert!(every_score(&app, &ids).await.iter().all(|s| s.model_version == refitted.model_version));

        // A model recorded by FitModel is the analyst's: recomputes keep it.
        let pinned = app.scoring().fit_model(pb::FitModelRequest::default()).await.unwrap().into_inner();
        assert!(!pinned.fitted_by_recompute, "{pinned:?}");
        buy_now(&app, &ids[9], "repeat-5", 20).await;
        score_once(&app, &ids[9], |s| s.rfm.as_ref().unwrap().frequency == 2).await;
        patron_tests::recompute_until_scored(&app, &ids).await;
        let kept = app.scoring().get_model(pb::GetModelRequest {}).await.unwrap().into_inner();
        assert_eq!(kept, pinned);
        assert!(every_score(&app, &ids).await.iter().all(|s| s.model_version == pinned.model_version));
    }

    async fn customers_without_a_purchase_are_scored_as_prospects(app: TestApp) {
        // A lead erased before anything else happens: nobody to score. (No
        // score exists before the first recompute, which needs a model, which
        // needs repeat purchases, which reach the read model after the erasure.)
        let erased = new_lead(&app, "lead-gone").await;
        app.profile().erase_customer(profile_pb::EraseCustomerRequest { id: erased.clone(), reason: "asked".into() }).await.unwrap();
        let buyers = patron_tests::seed_histories(&app, 6, 9, |rng| {
            (0..3).map(|k| (-100 * k - rng.random_range(1..60i64), rng.random_range(500..9_000))).collect()
        })
        .await;
        let mut prospects = Vec::new();
        for i in 0..2 {
            prospects.push(new_lead(&app, &format!("lead-{i}")).await);
        }
        patron_tests::score_everyone(&app, &buyers).await;
        // The leads reach the read model after the buyers' purchases, and
        // are scored online.
        for id in &prospects {
            score_once(&app, id, |_| true).await;
        }
        let err = app.scoring().get_score(pb::GetScoreRequest { customer_id: erased }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "an erased lead is not scored");
        let model = app.scoring().get_model(pb::GetModelRequest {}).await.unwrap().into_inner();
        // (A fit of the whole read model: the one before the last recompute
        // may have seen only part of it.)
        let fit = app.scoring().fit_model(pb::FitModelRequest::default()).await.unwrap().into_inner();
        assert_eq!(fit.customers, 6, "prospects are not in the fit");
        for id in &prospects {
            let score = app.scoring().get_score(pb::GetScoreRequest { customer_id: id.clone() }).await.unwrap().into_inner().score;
            assert_eq!(score.lifecycle_stage, pb::LifecycleStage::Prospect as i32, "{score:?}");
            let rfm = score.rfm.as_ref().unwrap();
            assert_eq!((rfm.frequency, rfm.r_score, rfm.f_score, rfm.m_score, rfm.segment.as_str()), (0, 0, 0, 0, ""), "no ranks");
            let churn = score.churn.as_ref().unwrap();
            assert_eq!((churn.probability, churn.risk), (0.0, pb::ChurnRisk::Unspecified as i32));
            assert_eq!((score.value_tier, score.value_quadrant), (0, 0));
            // Loyalty: only satisfaction (unknown: 0.5) weighs in, at 20%.
            assert!(close(score.loyalty_index, 0.1), "{score:?}");
            assert_eq!(score.model_version, model.model_version);
        }
        let dist = app.scoring().get_score_distribution(pb::GetScoreDistributionRequest {}).await.unwrap().into_inner();
        assert_eq!(dist.customers, 8);
        assert_eq!(dist.rfm_segments.iter().map(|b| b.count).sum::<i64>(), 6, "prospects have no RFM segment");
        let stage = |key: &str| dist.lifecycle_stages.iter().find(|b| b.key == key).map_or(0, |b| b.count);
        assert_eq!(stage("LIFECYCLE_STAGE_PROSPECT"), 2);

        // A prospect's first purchase makes it a new customer, online.
        buy_now(&app, &prospects[0], "first-order", 12).await;
        let score = score_once(&app, &prospects[0], |s| s.lifecycle_stage == pb::LifecycleStage::New as i32).await;
        assert_eq!(score.rfm.unwrap().frequency, 1);

        // A lead created between recomputes is scored online too.
        let late = new_lead(&app, "lead-late").await;
        let score = score_once(&app, &late, |_| true).await;
        assert_eq!(score.lifecycle_stage, pb::LifecycleStage::Prospect as i32);
        // A profile change of a buyer leaves its score as it was.
        let before = app.scoring().get_score(pb::GetScoreRequest { customer_id: buyers[0].clone() }).await.unwrap().into_inner().score;
        app.profile()
            .update_customer(profile_pb::UpdateCustomerRequest {
                customer: Some(profile_pb::Customer { id: buyers[0].clone(), region: "East".into(), ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["region".into()] }),
            })
            .await
            .unwrap();
        let marker = new_lead(&app, "lead-marker").await;
        // Once a later change is scored, the update has been applied too.
        score_once(&app, &marker, |_| true).await;
        let after = app.scoring().get_score(pb::GetScoreRequest { customer_id: buyers[0].clone() }).await.unwrap().into_inner().score;
        assert_eq!(after, before);
    }

    async fn a_score_of_later_data_is_never_replaced_by_an_older_one(app: TestApp) {
        // The guard between a recompute and online scoring, at the store: a
        // score reflecting a later position of the change feed is never
        // replaced by one computed from older data (single rows and a bulk
        // write of thousands, which takes PostgreSQL's UNNEST path).
        use patron_store::{Storage, scoring::{ScoreRow, ScoringStore}};
        let row = stored_score;
        let storage = Storage::connect_lazy(&app.settings.database).await.unwrap();
        let store = ScoringStore::new(&storage);
        let at = chrono::Utc::now();
        let stored = |ids: Vec<String>| {
            let store = store.clone();
            async move { store.scores(&ids).await.unwrap() }
        };
        store.save_scores(at, 10, &[row("c-1", "online at 10")]).await.unwrap();
        store.save_scores(at, 5, &[row("c-1", "recompute read at 5")]).await.unwrap();
        assert_eq!(stored(vec!["c-1".into()]).await["c-1"], b"online at 10");
        store.save_scores(at, 10, &[row("c-1", "recompute read at 10")]).await.unwrap();
        assert_eq!(stored(vec!["c-1".into()]).await["c-1"], b"recompute read at 10", "same data: the recompute wins");

        let ids: Vec<String> = (0..3_000).map(|i| format!("bulk-{i}")).collect();
        let first: Vec<ScoreRow> = ids.iter().map(|id| row(id, "first at 20")).collect();
        store.save_scores(at, 20, &first).await.unwrap();
        let (none, before_online) = store.scores_newer_since(0, i64::MAX).await.unwrap();
        assert!(none.is_empty());
        // Online updates of every third customer at 30, then a recompute that read at 25.
        let online: Vec<ScoreRow> = ids.iter().step_by(3).map(|id| row(id, "online at 30")).collect();
        store.save_scores(at, 30, &online).await.unwrap();
        let recompute: Vec<ScoreRow> = ids.iter().map(|id| row(id, "recompute at 25")).collect();
        store.save_scores(at, 25, &recompute).await.unwrap();
        let after = stored(ids.clone()).await;
        for (i, id) in ids.iter().enumerate() {
            let want: &[u8] = if i % 3 == 0 { b"online at 30" } else { b"recompute at 25" };
            assert_eq!(after[id], want, "{id}");
        }
        // What the recompute must leave out of the cache: the online scores,
        // as saved since it read (here: since before the online updates).
        let (mut newer, seen) = store.scores_newer_since(before_online, 25).await.unwrap();
        newer.sort_by_key(|id| id.trim_start_matches("bulk-").parse::<usize>().unwrap());
        let online_ids: Vec<String> = ids.iter().step_by(3).cloned().collect();
        assert_eq!(newer, online_ids);
        assert!(seen > before_online);
        // Asked again from where it got to: nothing new.
        assert_eq!(store.scores_newer_since(seen, 25).await.unwrap(), (vec![], seen));
        // From the start, the older online score of c-1 (at 10) is not newer than 25.
        let (all, _) = store.scores_newer_since(0, 25).await.unwrap();
        assert_eq!(all.len(), online_ids.len());
    }

    async fn a_full_recompute_replaces_the_scores_table_keeping_newer_and_unscored_rows(app: TestApp) {
        // PostgreSQL: a full recompute fills a fresh table and swaps it in.
        use patron_store::{Storage, scoring::{RecomputeRead, ScoreRow, ScoringStore}};
        let row = stored_score;
        let storage = Storage::connect_lazy(&app.settings.database).await.unwrap();
        let store = ScoringStore::new(&storage);
        let at = chrono::Utc::now();
        let ids = |n: std::ops::Range<usize>| n.map(|i| format!("c-{i}")).collect::<Vec<_>>();
        let last_revision = || {
            let store = store.clone();
            async move { store.scores_after((0, None), 1_000).await.unwrap().iter().map(|r| r.0).max().unwrap() }
        };
        let before: Vec<ScoreRow> = ids(0..8).iter().map(|id| row(id, "old at 10")).collect();
        store.save_scores(at, 10, &before).await.unwrap();
        // The recompute reads the read model here: it sees these scores...
        let read = last_revision().await;
        // ...and not this one, of later data, saved before it begins.
        store.save_scores(at, 30, &[row("c-2", "online at 30")]).await.unwrap();
        let head = last_revision().await;

        // It read customers 5 and 7 and did not score them (as a recompute
        // does not score an erased customer without purchases), and read
        // customer 6 for the first time.
        let read = RecomputeRead { revision: read, unscored: vec!["c-5".into(), "c-7".into()] };
        let Some(mut replacement) = store.begin_replacement(at, 20, read).await.unwrap() else {
            assert_eq!(app.backend, patron_tests::Backend::Sqlite, "PostgreSQL replaces the table");
            return;
        };
        // Customers 0-4 and 6 in three chunks.
        let chunk = |r: std::ops::Range<usize>| ids(r).iter().map(|id| row(id, "recompute at 20")).collect::<Vec<_>>();
        replacement.write(&chunk(0..3)).await.unwrap();
        replacement.write(&chunk(3..5)).await.unwrap();
        replacement.write(&[row("c-6", "recompute at 20")]).await.unwrap();
        // Online scoring goes on while the recompute's scores are copied: it
        // waits only for the swap at the end (before, it waited for the
        // whole replacement, seconds at a million customers).
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            store.save_scores(at, 25, &[row("c-3", "online at 25")]),
        )
        .await
        .expect("an online score waited for the recompute's copy")
        .unwrap();
        // The first pass of the takeover (before other writes wait) sees
        // what was saved up to now...
        let prepared = replacement.prepare().await.unwrap();
        // ...and online scoring still goes on: a later score of a rescored
        // customer, a lagging one (of data the recompute read) of a rescored
        // and of a customer it did not score, and a new customer.
        for (id, data_seq, text) in [("c-4", 26, "online at 26"), ("c-5", 15, "lagging at 15"), ("c-9", 27, "new at 27"), ("c-1", 18, "lagging at 18")] {
            tokio::time::timeout(std::time::Duration::from_secs(20), store.save_scores(at, data_seq, &[row(id, text)]))
                .await
                .expect("an online score waited for the recompute's takeover")
                .unwrap();
        }
        // Nothing of the recompute shows before the swap.
        assert_eq!(store.scores(&ids(0..7)).await.unwrap()["c-0"], b"old at 10");
        let newer = prepared.swap().await.unwrap();
        assert_eq!(newer, ["c-2", "c-3", "c-4"], "the kept scores newer than the recompute's are named");

        let after = store.scores(&ids(0..10)).await.unwrap();
        let text = |id: &str| String::from_utf8(after[id].clone()).unwrap();
        for id in ["c-0", "c-1", "c-6"] {
            assert_eq!(text(id), "recompute at 20", "{id}");
        }
        assert_eq!(text("c-2"), "online at 30", "a later online score survives the recompute");
        assert_eq!(text("c-3"), "online at 25", "so does one written during the recompute");
        assert_eq!(text("c-4"), "online at 26", "and one written after the first pass of the takeover");
        assert_eq!(text("c-5"), "lagging at 15", "a customer the recompute did not score keeps its latest score");
        assert_eq!(text("c-7"), "old at 10", "and so does one without a later one");
        assert_eq!(text("c-9"), "new at 27", "a customer new since the first pass is kept");
        // The recompute is one new revision, after the online scores written
        // while it ran (so a follower of the revisions sees both, in commit
        // order); the rows it kept keep theirs. (It reserved its revision
        // ahead of the counter when it began, so the counter skipped ahead.)
        let revisions_after = |after: i64| {
            let store = store.clone();
            async move {
                let mut changed = store.scores_after((after, None), 1_000).await.unwrap();
                changed.retain(|r| r.0 > after);
                changed.into_iter().map(|r| (r.0 - after, r.1)).collect::<Vec<_>>()
            }
        };
        let changed = revisions_after(head).await;
        let online: Vec<(i64, &str)> = changed[..4].iter().map(|(r, id)| (*r, id.as_str())).collect();
        assert_eq!(online, [(1, "c-3"), (2, "c-4"), (3, "c-5"), (4, "c-9")]);
        let recompute: Vec<&str> = changed[4..].iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(recompute, ["c-0", "c-1", "c-6"]);
        let recompute_revision = changed[4].0;
        assert!(recompute_revision > 4 && changed[4..].iter().all(|c| c.0 == recompute_revision));

        // The swapped-in table has the original's keys and indexes: upserts
        // (after the recompute's revision), a second replacement, and one
        // abandoned (which changes nothing).
        store.save_scores(at, 40, &[row("c-0", "online at 40")]).await.unwrap();
        assert_eq!(revisions_after(head + recompute_revision).await, [(1, "c-0".to_owned())]);
        // This one read up to the recompute above, so not c-0's score of
        // later data, and scores only customers 0 and 1.
        let read = RecomputeRead {
            revision: head + recompute_revision,
            unscored: ["c-2", "c-3", "c-4", "c-5", "c-6", "c-7", "c-9"].map(String::from).to_vec(),
        };
        let mut again = store.begin_replacement(at, 35, read).await.unwrap().unwrap();
        again.write(&chunk(0..2)).await.unwrap();
        // More online writes than the replacement reserved revisions for
        // commit meanwhile (the counter is moved by hand): the swap gives
        // its rows the revision it takes, still after them.
        use sea_orm::ConnectionTrait;
        let db = storage.connection().clone();
        db.execute_unprepared("UPDATE scoring_score_head SET last_revision = last_revision + 100000000")
            .await
            .unwrap();
        let counter = head + recompute_revision + 1 + 100_000_000;
        assert_eq!(again.finish().await.unwrap(), ["c-0"]);
        assert_eq!(revisions_after(counter).await, [(1, "c-1".to_owned())]);
        let kept = store.scores(&ids(0..10)).await.unwrap();
        assert_eq!(kept.len(), 9, "every customer it did not score keeps a score");
        assert_eq!(kept["c-9"], b"new at 27");
        assert_eq!(kept["c-6"], b"recompute at 20");
        store.save_scores(at, 45, &[row("c-5", "online at 45")]).await.unwrap();
        assert_eq!(revisions_after(counter + 1).await, [(1, "c-5".to_owned())]);
        let mut abandoned = store.begin_replacement(at, 50, RecomputeRead::default()).await.unwrap().unwrap();
        abandoned.write(&chunk(0..7)).await.unwrap();
        drop(abandoned);
        // Abandoned after the first pass of the takeover, too.
        let mut abandoned = store.begin_replacement(at, 50, RecomputeRead::default()).await.unwrap().unwrap();
        abandoned.write(&chunk(0..7)).await.unwrap();
        drop(abandoned.prepare().await.unwrap());
        let last = store.scores(&ids(0..7)).await.unwrap();
        assert_eq!(last["c-0"], b"online at 40");
        assert_eq!(last["c-1"], b"recompute at 20");
        // One text column of every row a catalog query returns.
        let texts = |sql: &'static str, column: &'static str| {
            let db = storage.connection().clone();
            async move {
                db.query_all_raw(sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, sql))
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.try_get::<String>("", column).unwrap())
                    .collect::<Vec<_>>()
            }
        };
        let indexes = texts("SELECT indexname FROM pg_indexes WHERE tablename LIKE 'scoring_scores%' ORDER BY 1", "indexname").await;
        assert_eq!(indexes, ["scoring_scores_by_revision", "scoring_scores_pkey"]);
        // The rows collected to keep went with their transactions, finished or abandoned.
        let kept_tables = texts("SELECT tablename FROM pg_tables WHERE tablename LIKE '%\\_kept'", "tablename").await;
        assert!(kept_tables.is_empty());
        // The revision column, added at the swap, is the migration's again.
        let revision = texts(
            "SELECT column_default || ' ' || is_nullable || ' ' || data_type AS d FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'scoring_scores' AND column_name = 'revision'",
            "d",
        )
        .await;
        assert_eq!(revision, ["0 NO bigint"]);
        // Ids compare bytewise ("C") in every service's tables, the swapped-in
        // score table included (see the migration m20261126_000012).
        let not_bytewise = texts(
            "SELECT c.table_name || '.' || c.column_name AS col \
             FROM information_schema.columns c JOIN information_schema.tables t USING (table_schema, table_name) \
             WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
             AND c.data_type IN ('character varying', 'text') AND (c.column_name = 'id' OR c.column_name LIKE '%\\_id') \
             AND c.collation_name IS DISTINCT FROM 'C' ORDER BY 1",
            "col",
        )
        .await;
        assert_eq!(not_bytewise, Vec::<String>::new());
    }

    async fn the_whole_read_model_is_read_with_every_transaction_once(app: TestApp) {
        // A full read of the read model (on PostgreSQL: binary COPY of two
        // block ranges over two connections) gives every customer-day
        // exactly once, expanded to one purchase per transaction. Each
        // customer's days are written in different batches, so its rows
        // lie far apart in the table, on both sides of the split.
        use patron_domain::models::summary::Purchase;
        use patron_store::{Storage, cursor::Advance, scoring::{ReadModelBatch, ScoringStore}};
        let storage = Storage::connect_lazy(&app.settings.database).await.unwrap();
        let store = ScoringStore::new(&storage);
        let consumer = "read-test";
        let customers = 3_000;
        let days = 12;
        let mut want: std::collections::BTreeMap<String, Vec<(i32, i64, i64)>> = Default::default();
        let mut position = store.cursor(consumer).await.unwrap();
        for day in 0..days {
            let mut batch = ReadModelBatch::default();
            for c in 0..customers {
                // Some customers skip days, some buy twice on a day.
                if (c + day) % 5 == 0 {
                    continue;
                }
                let id = format!("cust-{c:05}-ü");
                let day_number = 19_000 + day;
                let times = 1 + usize::from(c % 7 == day % 7);
                let amounts: Vec<i64> = (0..times)
                    .map(|t| i64::from(c * 1_000 + day) * 1_000_000 + t as i64)
                    .collect();
                for amount in &amounts {
                    batch.purchases.push((id.clone(), day_number, *amount, amount / 3, "EUR".into()));
                }
                let entry = want.entry(id).or_default();
                // The day's sums on its first purchase, the others empty.
                let total = amounts.iter().sum();
                let cost = amounts.iter().map(|a| a / 3).sum();
                entry.push((day_number, total, cost));
                for _ in 1..times {
                    entry.push((day_number, 0, 0));
                }
            }
            store
                .apply(consumer, batch, Advance { from: position, to: position + 1 })
                .await
                .unwrap();
            position += 1;
        }
        let (ids, purchases) = store.purchase_days().await.unwrap();
        let want_ids: Vec<String> = want.keys().cloned().collect();
        assert_eq!(ids, want_ids, "customers, numbered in id order");
        let mut got: Vec<Vec<(i32, i64, i64)>> = vec![Vec::new(); ids.len()];
        for &Purchase { customer, day, amount_nanos, cost_nanos } in &purchases {
            got[customer as usize].push((day, amount_nanos, cost_nanos));
        }
        for (i, (id, mut expected)) in want.into_iter().enumerate() {
            got[i].sort_unstable_by_key(|p| (p.0, std::cmp::Reverse(p.1)));
            expected.sort_unstable_by_key(|p| (p.0, std::cmp::Reverse(p.1)));
            assert_eq!(got[i], expected, "{id}");
        }
        // A recompute's read summarizes each customer as it reads it: the
        // summaries of the purchases above, for a day within the purchases
        // (those after it left out) and after them all.
        for as_of_day in [19_003, 20_000] {
            let snapshot = store.snapshot(consumer, as_of_day).await.unwrap();
            assert_eq!(snapshot.data_seq, position);
            assert_eq!(snapshot.ids, ids);
            let summaries = patron_domain::models::summary::summarize(ids.len(), &purchases, as_of_day);
            assert!(!summaries.is_empty());
            assert_eq!(snapshot.summaries, summaries, "as of day {as_of_day}");
            // Every customer's record once, in id order, whichever half of
            // the table it lies in (each batch rewrote the rows it touched).
            let facts: Vec<(&str, Option<&str>)> = snapshot
                .facts
                .iter()
                .map(|(id, f)| (id, f.currency.as_ref().map(|c| c.as_str())))
                .collect();
            let want_facts: Vec<(&str, Option<&str>)> = want_ids.iter().map(|id| (id.as_str(), Some("EUR"))).collect();
            assert_eq!(facts, want_facts);
        }
    }

    async fn purchases_scored_online_during_a_recompute_stay_visible(app: TestApp) {
        // A purchase scored online while a recompute runs is newer than what
        // the recompute read: the store keeps the online score, and the cache
        // must not go back to the recompute's older one afterwards (it would
        // stay there for the TTL, an hour by default).
        let n = 100;
        let ids = patron_tests::seed_histories(&app, n, 11, |_| vec![(-60, 2_000), (-30, 3_000), (-10, 1_500)]).await;
        patron_tests::score_everyone(&app, &ids).await;
        let done = std::sync::atomic::AtomicBool::new(false);
        let purchases = async {
            let mut bought = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                buy_now(&app, &ids[bought % n], &format!("during-{bought}"), 10).await;
                bought += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            bought
        };
        let recomputes = async {
            for _ in 0..5 {
                let request = pb::RecomputeScoresRequest::default();
                let mut progress = app.scoring().recompute_scores(request).await.unwrap().into_inner();
                while progress.message().await.unwrap().is_some() {}
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        let (bought, ()) = tokio::join!(purchases, recomputes);
        assert!(bought > 0);
        for (i, id) in ids.iter().enumerate() {
            let want = 3 + (0..bought).filter(|k| k % n == i).count() as i64;
            score_once(&app, id, |s| s.rfm.as_ref().unwrap().frequency == want).await;
        }
    }

    async fn purchases_during_the_first_recompute_are_scored_once_it_ends(app: TestApp) {
        // Online scoring scores against a recompute's baseline, and before
        // the first recompute has saved one it can score nobody. A purchase
        // the read model applies after that recompute read it, but before
        // its baseline is saved, must still reach the buyer's score once the
        // baseline is there, not wait for the next recompute. (Timing decides
        // which purchases land in that window; four buyers keep the feed busy
        // so that some do. Without the fix this failed 5 runs in 6, 3 in 3
        // on PostgreSQL.)
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let n = 100;
        let ids = patron_tests::seed_histories(&app, n, 12, |_| vec![(-60, 2_000), (-30, 3_000), (-10, 1_500)]).await;
        let (running, done) = (AtomicBool::new(false), AtomicBool::new(false));
        let (next, during) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let buyer = || async {
            while !done.load(Ordering::Relaxed) {
                let k = next.fetch_add(1, Ordering::Relaxed);
                buy_now(&app, &ids[k % n], &format!("first-{k}"), 10).await;
                if running.load(Ordering::Relaxed) {
                    during.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let recompute = async {
            // Purchases flow before it starts, so some are applied while it runs.
            tokio::time::sleep(Duration::from_millis(300)).await;
            running.store(true, Ordering::Relaxed);
            let request = pb::RecomputeScoresRequest::default();
            let mut progress = app.scoring().recompute_scores(request).await.unwrap().into_inner();
            while progress.message().await.unwrap().is_some() {}
            running.store(false, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
            done.store(true, Ordering::Relaxed);
        };
        tokio::join!(buyer(), buyer(), buyer(), buyer(), recompute);
        assert!(during.load(Ordering::Relaxed) > 0, "no purchase was recorded while the recompute ran");
        let bought = next.load(Ordering::Relaxed);
        for (i, id) in ids.iter().enumerate() {
            let want = 3 + (0..bought).filter(|k| k % n == i).count() as i64;
            score_once(&app, id, |s| s.rfm.as_ref().unwrap().frequency == want).await;
        }
    }

    async fn a_new_purchase_rescores_its_customer_online(app: TestApp) {
        let n = 300;
        let ids = customers(&app, n).await;
        let purchases = population(n, 21);
        ingest(&app, &ids, &purchases, 0).await;
        let as_of = Timestamp { seconds: END_DAY * 86_400, nanos: 0 };
        let (bg, _) = expected(&purchases, n, END_DAY);
        let fit = fit_when_caught_up(&app, pb::FitModelRequest { as_of: Some(as_of), holdout_end: None }, &bg).await;
        let mut progress = app.scoring().recompute_scores(pb::RecomputeScoresRequest { as_of: Some(as_of) }).await.unwrap().into_inner();
        while progress.message().await.unwrap().is_some() {}

        let get = |c: usize| {
            let mut client = app.scoring();
            let id = ids[c].clone();
            async move { client.get_score(pb::GetScoreRequest { customer_id: id }).await.unwrap().into_inner().score }
        };
        // The repeat buyer with the most purchase occasions (so T and t_x are long).
        let c = (0..n).max_by_key(|c| purchases.iter().filter(|p| p.0 == *c).count()).unwrap();
        let before = get(c).await;
        assert!(!before.rfm.as_ref().unwrap().ranks_stale);
        let bystander = get((c + 1) % n).await;

        // A purchase now, between recomputes.
        let now = chrono::Utc::now();
        let written = std::time::Instant::now();
        app.profile()
            .record_transactions(profile_pb::RecordTransactionsRequest {
                transactions: vec![profile_pb::Transaction {
                    id: "online-1".into(),
                    customer_id: ids[c].clone(),
                    occurred_at: Some(Timestamp { seconds: now.timestamp(), nanos: 0 }),
                    amount: Some(Money { currency_code: "EUR".into(), units: 42, nanos: 0 }),
                    quantity: 1,
                    ..Default::default()
                }],
            })
            .await
            .unwrap();
        let after = loop {
            let score = get(c).await;
            if score.rfm.as_ref().unwrap().frequency > before.rfm.as_ref().unwrap().frequency {
                break score;
            }
            assert!(written.elapsed() < Duration::from_secs(20), "the purchase never reached the score");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Reported, not asserted (shared machines are noisy): the issue asks for under a second.
        eprintln!("online score visible {} ms after the write returned", written.elapsed().as_millis());

        // The customer's own figures, exactly as the domain computes them as of today.
        let today = now.timestamp().div_euclid(86_400) as i32;
        let mut mine: Vec<Purchase> = purchases
            .iter()
            .filter(|p| p.0 == c)
            .map(|(_, day, cents)| Purchase { customer: 0, day: *day as i32, amount_nanos: cents * 10_000_000, cost_nanos: 0 })
            .collect();
        mine.push(Purchase { customer: 0, day: today, amount_nanos: 42_000_000_000, cost_nanos: 0 });
        let s = summarize(1, &mine, today)[0];
        let bgp = fit.bg_nbd.unwrap();
        let params = BgNbdParams { r: bgp.r, alpha: bgp.alpha, a: bgp.a, b: bgp.b };
        let rfm = after.rfm.clone().unwrap();
        assert!(rfm.ranks_stale, "ranks place the new figures against the last recompute");
        assert_eq!(rfm.frequency, i64::from(s.transactions));
        assert_eq!(rfm.recency_days, 0);
        assert_eq!(rfm.r_score, 5, "a purchase today beats the recompute's population");
        let monetary = rfm.monetary.unwrap();
        assert_eq!(i128::from(monetary.units) * 1_000_000_000 + i128::from(monetary.nanos), s.total_nanos);
        let clv = after.clv.clone().unwrap();
        assert!(close(clv.p_alive, params.p_alive(s.x, s.t_x, s.t)), "{} vs {}", clv.p_alive, params.p_alive(s.x, s.t_x, s.t));
        let e = params.conditional_expected_purchases(365.0, s.x, s.t_x, s.t).unwrap();
        assert!(close(clv.expected_purchases_365d, e), "{} vs {e}", clv.expected_purchases_365d);
        assert!(close(after.churn.as_ref().unwrap().probability, 1.0 - clv.p_alive));
        assert_eq!(after.model_version, fit.model_version);
        assert_eq!(after.as_of.unwrap().seconds.div_euclid(86_400), i64::from(today));
        assert!(after.computed_at.unwrap().seconds >= before.computed_at.unwrap().seconds);
        let batch = app
            .scoring()
            .batch_get_scores(pb::BatchGetScoresRequest { customer_ids: vec![ids[c].clone()] })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(batch.scores, std::slice::from_ref(&after), "BatchGetScores sees the online score too");
        assert_eq!(get((c + 1) % n).await, bystander, "other customers are untouched");

        // The next recompute ranks everyone afresh, the new purchase included.
        let mut progress = app.scoring().recompute_scores(pb::RecomputeScoresRequest::default()).await.unwrap().into_inner();
        while progress.message().await.unwrap().is_some() {}
        let recomputed = get(c).await;
        let rfm = recomputed.rfm.unwrap();
        assert!(!rfm.ranks_stale);
        assert_eq!(rfm.frequency, i64::from(s.transactions));
        assert!(close(recomputed.clv.unwrap().p_alive, params.p_alive(s.x, s.t_x, s.t)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_are_cached_in_redis_and_refilled_after_eviction() {
    let Some(redis_url) = patron_tests::redis_url() else {
        return patron_tests::skip("Redis scoring test", "REDIS_URL is not set");
    };
    let prefix = format!("patron-test:{}:", uuid::Uuid::new_v4().simple());
    let Some(app) = TestApp::spawn_with(patron_tests::Backend::Sqlite, |s| {
        s.redis.url = Some(secrecy::SecretString::from(redis_url.clone()));
        s.redis.key_prefix = prefix.clone();
        // Redis alone: this test evicts from Redis behind the cache's back.
        s.cache.near_ttl_ms = 0;
    })
    .await
    else {
        return;
    };
    let n = 200;
    let ids = customers(&app, n).await;
    let purchases = population(n, 11);
    ingest(&app, &ids, &purchases, 0).await;
    let as_of = Timestamp {
        seconds: END_DAY * 86_400,
        nanos: 0,
    };
    let (bg, _) = expected(&purchases, n, END_DAY);
    fit_when_caught_up(
        &app,
        pb::FitModelRequest {
            as_of: Some(as_of),
            holdout_end: None,
        },
        &bg,
    )
    .await;
    let mut progress = app
        .scoring()
        .recompute_scores(pb::RecomputeScoresRequest { as_of: Some(as_of) })
        .await
        .unwrap()
        .into_inner();
    while progress.message().await.unwrap().is_some() {}

    let mut redis = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let field = format!("score:{}", ids[5]);
    let hash = patron_cache::RedisSettings {
        key_prefix: prefix.clone(),
        ..Default::default()
    }
    .hash_of(&field);
    let cached: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(&hash)
        .arg(&field)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        cached.is_some(),
        "the recompute wrote the score to Redis before its stream ended"
    );

    let first = app
        .scoring()
        .get_score(pb::GetScoreRequest {
            customer_id: ids[5].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .score;
    let _: () = redis::cmd("HDEL")
        .arg(&hash)
        .arg(&field)
        .query_async(&mut redis)
        .await
        .unwrap();
    let again = app
        .scoring()
        .get_score(pb::GetScoreRequest {
            customer_id: ids[5].clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .score;
    assert_eq!(first, again, "served from the store after eviction");
    let refilled: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(&hash)
        .arg(&field)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(refilled.is_some(), "a miss refills the cache");
}
