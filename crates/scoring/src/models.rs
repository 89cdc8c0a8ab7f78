//! FitModel / GetModel: BG/NBD + Gamma-Gamma fitted on the read model, with
//! the literature's holdout validation, recorded as versioned models.

use chrono::{DateTime, Utc};
use patron_domain::{
    ApiError,
    models::{
        bgnbd::{self, BgNbdParams, BgNbdRow},
        gamma_gamma::{self, GammaGammaParams, GammaGammaRow},
        scores::FittedModel,
        summary::{CustomerSummary, Purchase, summarize},
    },
};
use patron_proto::scoring as pb;
use patron_runtime::{
    convert::{now, optional_timestamp, to_timestamp},
    error::ApiResult,
    population::PopulationGate,
};
use patron_store::scoring::ScoringStore;
use prost::Message;

/// Frequencies 0..=6 get a bucket each; the last holds 7 and above.
const LAST_BUCKET: u32 = 7;

/// The UTC day number of `t` (days since 1970-01-01).
pub(crate) fn day_of(t: DateTime<Utc>) -> i32 {
    t.timestamp().div_euclid(86_400) as i32
}

/// The reason FitModel gives when the data cannot identify the models
/// (nobody with a second repeat purchase; see `bgnbd::fit`); RecomputeScores
/// then scores without a model.
pub(crate) const NOT_IDENTIFIABLE: &str = "MODEL_NOT_IDENTIFIABLE";

fn not_identifiable(e: impl std::fmt::Display) -> ApiError {
    ApiError::failed_precondition(
        NOT_IDENTIFIABLE,
        format!("cannot fit the purchase models on this data: {e}"),
    )
}

/// FitModel: a fit on the whole read model as of `as_of`, validated on
/// the holdout period when one is given, recorded as the newest model.
pub(crate) async fn fit(
    store: &ScoringStore,
    gate: &PopulationGate,
    req: pb::FitModelRequest,
) -> ApiResult<pb::ModelFit> {
    let now = now();
    let as_of = optional_timestamp(req.as_of.as_ref(), "as_of")?.unwrap_or(now);
    let holdout_end = optional_timestamp(req.holdout_end.as_ref(), "holdout_end")?;
    if holdout_end.is_some_and(|h| h <= as_of) {
        return Err(ApiError::invalid_field(
            "holdout_end",
            "must be after as_of",
        ));
    }
    let as_of_day = day_of(as_of);
    let _slot = gate.enter().await;
    let (ids, purchases) = store.purchase_days().await?;
    let fit = tokio::task::spawn_blocking(move || {
        let summaries = summarize(ids.len(), &purchases, as_of_day);
        let mut fit = fit_population(&summaries, as_of, now)?;
        if let Some(end) = holdout_end {
            let model = fitted(&fit);
            fit.holdout = Some(holdout(
                &model.bg_nbd,
                &summaries,
                ids.len(),
                &purchases,
                as_of_day,
                end,
            ));
        }
        Ok::<_, ApiError>(fit)
    })
    .await
    .map_err(|e| ApiError::internal(format!("fitting the models: {e}")))??;
    save(store, &fit).await?;
    Ok(fit)
}

/// Records `fit` as the newest model.
pub(crate) async fn save(store: &ScoringStore, fit: &pb::ModelFit) -> ApiResult<()> {
    let create_time = fit
        .create_time
        .as_ref()
        .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .unwrap_or_else(now);
    store
        .save_model(&fit.model_version, create_time, fit.encode_to_vec())
        .await?;
    Ok(())
}

/// BG/NBD and Gamma-Gamma fitted on `summaries` (the population as of
/// `as_of`), as a new model version created at `now`, without holdout
/// validation. CPU-bound (about half a second for a million customers).
pub(crate) fn fit_population(
    summaries: &[CustomerSummary],
    as_of: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ApiResult<pb::ModelFit> {
    let rows: Vec<BgNbdRow> = summaries.iter().map(CustomerSummary::bg_nbd_row).collect();
    let bg = bgnbd::fit(&rows).map_err(not_identifiable)?;
    let gg_rows: Vec<GammaGammaRow> = summaries
        .iter()
        .filter(|s| s.x > 0 && s.repeat_mean_value > 0.0)
        .map(|s| GammaGammaRow {
            x: s.x,
            mean_value: s.repeat_mean_value,
            weight: 1.0,
        })
        .collect();
    let gg = gamma_gamma::fit(&gg_rows).map_err(not_identifiable)?;
    Ok(pb::ModelFit {
        model_version: uuid::Uuid::now_v7().to_string(),
        bg_nbd: Some(pb::BgNbdParams {
            r: bg.params.r,
            alpha: bg.params.alpha,
            a: bg.params.a,
            b: bg.params.b,
        }),
        gamma_gamma: Some(pb::GammaGammaParams {
            p: gg.params.p,
            q: gg.params.q,
            v: gg.params.v,
        }),
        customers: bg.customers as i64,
        repeat_customers: bg.repeat_customers as i64,
        log_likelihood: bg.log_likelihood,
        as_of: Some(to_timestamp(as_of)),
        holdout: None,
        gamma_gamma_log_likelihood: gg.log_likelihood,
        converged: true,
        iterations: (bg.iterations + gg.iterations) as i32,
        create_time: Some(to_timestamp(now)),
        parameters_at_limit: bg
            .at_limit
            .iter()
            .map(|name| format!("bg_nbd.{name}"))
            .chain(gg.at_limit.iter().map(|name| format!("gamma_gamma.{name}")))
            .collect(),
        fitted_by_recompute: false,
    })
}

/// The parameters of a recorded fit, as the scoring models take them.
pub(crate) fn fitted(fit: &pb::ModelFit) -> FittedModel {
    let (bg, gg) = (
        fit.bg_nbd.unwrap_or_default(),
        fit.gamma_gamma.unwrap_or_default(),
    );
    FittedModel {
        bg_nbd: BgNbdParams {
            r: bg.r,
            alpha: bg.alpha,
            a: bg.a,
            b: bg.b,
        },
        gamma_gamma: GammaGammaParams {
            p: gg.p,
            q: gg.q,
            v: gg.v,
        },
    }
}

/// The literature's validation: repeat purchases the model predicts in
/// (as_of, end] against those made, in total and per calibration frequency.
fn holdout(
    bg: &BgNbdParams,
    summaries: &[CustomerSummary],
    customers: usize,
    purchases: &[Purchase],
    as_of_day: i32,
    end: DateTime<Utc>,
) -> pb::HoldoutValidation {
    let end_day = day_of(end);
    let horizon = f64::from(end_day - as_of_day);
    // Occasions (distinct days) per customer in (as_of, holdout_end].
    let mut actual = vec![0i64; customers];
    let mut previous = None;
    for p in purchases
        .iter()
        .filter(|p| p.day > as_of_day && p.day <= end_day)
    {
        // Purchases come ordered by customer and day; count each day once.
        if previous != Some((p.customer, p.day)) {
            actual[p.customer as usize] += 1;
            previous = Some((p.customer, p.day));
        }
    }
    let mut buckets: Vec<(i64, f64, i64)> = vec![(0, 0.0, 0); LAST_BUCKET as usize + 1];
    let mut predicted_total = 0.0;
    let mut actual_total = 0;
    for s in summaries {
        let predicted = bg
            .conditional_expected_purchases(horizon, s.x, s.t_x, s.t)
            .unwrap_or(0.0);
        let made = actual[s.customer as usize];
        let b = &mut buckets[s.x.min(LAST_BUCKET) as usize];
        b.0 += 1;
        b.1 += predicted;
        b.2 += made;
        predicted_total += predicted;
        actual_total += made;
    }
    pb::HoldoutValidation {
        predicted_purchases: predicted_total,
        actual_purchases: actual_total,
        buckets: buckets
            .into_iter()
            .enumerate()
            .filter(|(_, b)| b.0 > 0)
            .map(|(f, (n, predicted, actual))| pb::HoldoutBucket {
                frequency: f as i64,
                customers: n,
                predicted_mean: predicted / n as f64,
                actual_mean: actual as f64 / n as f64,
            })
            .collect(),
        holdout_end: Some(to_timestamp(end)),
    }
}

/// GetModel: the newest fit, NOT_FOUND before the first.
pub(crate) async fn latest(store: &ScoringStore) -> ApiResult<pb::ModelFit> {
    newest(store).await?.ok_or_else(|| {
        ApiError::new(
            patron_domain::ErrorCode::NotFound,
            "NO_MODEL",
            "no model has been fitted yet; call FitModel (RecomputeScores also fits one when there is none)",
        )
    })
}

/// The newest fit, if any.
pub(crate) async fn newest(store: &ScoringStore) -> ApiResult<Option<pb::ModelFit>> {
    store
        .latest_model()
        .await?
        .map(|bytes| {
            pb::ModelFit::decode(bytes.as_slice())
                .map_err(|e| ApiError::internal(format!("stored model: {e}")))
        })
        .transpose()
}
