//! RecomputeScores, GetScore and BatchGetScores.
//!
//! A recompute scores every customer of the read model with the newest
//! FitModel model (or, before any, one it fits itself), stores the encoded
//! scores and writes them to the cache, then drops the cached entries of
//! customers scored online meanwhile (their stored scores are newer); its
//! stream ends only after all of it, so every new score is visible to
//! GetScore.
//! Reads go cache first, then the store (filling the cache); cache failures
//! only cost latency (they are counted in the cache stats).

use std::{
    collections::{HashMap, HashSet},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use chrono::{DateTime, Utc};
use futures::Stream;
use patron_cache::{Bytes, Cache, ScoreCache, SingleFlight};
use patron_domain::{
    ApiError, ErrorCode, Money, Violations,
    activity::check_id,
    models::{
        rfm::Segment,
        scores::{
            Baseline, ChurnRisk, CustomerScores, CustomerSignals, FittedModel, LifecycleStage,
            ModelSettings, ValueQuadrant, ValueTier, score_customer,
            score_population_with_baseline, score_prospect,
        },
        summary::CustomerSummary,
    },
    money::Currency,
};
use patron_proto::{common, scoring as pb};
use patron_runtime::{
    convert::{now, optional_timestamp, to_money, to_timestamp},
    error::ApiResult,
    population::PopulationGate,
    to_status,
};
use patron_store::scoring::{
    CustomerFacts, DISTRIBUTION_COLUMNS, RecomputeRead, ScoreRow, ScoringSnapshot, ScoringStore,
};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

use crate::{
    consumer::READ_MODEL,
    encode::ScoreEncoder,
    models::{self, day_of},
    prefetch::prefetch,
};

pub(crate) type ProgressStream =
    Pin<Box<dyn Stream<Item = Result<pb::RecomputeScoresResponse, Status>> + Send>>;

const MAX_BATCH_IDS: usize = 1_000;
const CHUNK: usize = 5_000;

fn cache_key(customer_id: &str) -> String {
    // Not `format!`: a batch builds a hundred of these per call.
    let mut key = String::with_capacity(KEY_PREFIX.len() + customer_id.len());
    cache_key_into(&mut key, customer_id);
    key
}

const KEY_PREFIX: &str = "score:";

/// [`cache_key`] into a buffer (for keys only looked at, a million times).
fn cache_key_into(key: &mut String, customer_id: &str) {
    key.clear();
    key.push_str(KEY_PREFIX);
    key.push_str(customer_id);
}

/// A models' amount (nanos, summed as i128) as `Money`, saturated to what
/// it holds; none without a currency.
pub(crate) fn amount(currency: Option<Currency>, nanos: i128) -> Option<Money> {
    Some(Money {
        currency: currency?,
        nanos: nanos.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
    })
}

/// A model's output in units, rounded to the nano (see [`amount`]).
pub(crate) fn unit_amount(currency: Option<Currency>, value: f64) -> Option<Money> {
    amount(currency, (value * 1e9).round() as i128)
}

fn money(currency: Option<Currency>, nanos: i128) -> Option<common::Money> {
    amount(currency, nanos).map(to_money)
}

#[cfg(test)]
fn units(currency: Option<Currency>, value: f64) -> Option<common::Money> {
    unit_amount(currency, value).map(to_money)
}

pub(crate) fn churn_risk(s: &CustomerScores) -> pb::ChurnRisk {
    match s.churn_risk {
        ChurnRisk::Low => pb::ChurnRisk::Low,
        ChurnRisk::Medium => pb::ChurnRisk::Medium,
        ChurnRisk::High => pb::ChurnRisk::High,
    }
}

pub(crate) fn value_tier(s: &CustomerScores) -> pb::ValueTier {
    match s.value_tier {
        None => pb::ValueTier::Unspecified,
        Some(ValueTier::Low) => pb::ValueTier::Low,
        Some(ValueTier::Medium) => pb::ValueTier::Medium,
        Some(ValueTier::High) => pb::ValueTier::High,
    }
}

pub(crate) fn value_quadrant(s: &CustomerScores) -> pb::ValueQuadrant {
    match s.value_quadrant {
        None => pb::ValueQuadrant::Unspecified,
        Some(ValueQuadrant::Star) => pb::ValueQuadrant::Star,
        Some(ValueQuadrant::Grow) => pb::ValueQuadrant::Grow,
        Some(ValueQuadrant::Maintain) => pb::ValueQuadrant::Maintain,
        Some(ValueQuadrant::Minimal) => pb::ValueQuadrant::Minimal,
    }
}

pub(crate) fn lifecycle_stage(s: &CustomerScores) -> pb::LifecycleStage {
    match s.lifecycle {
        LifecycleStage::Prospect => pb::LifecycleStage::Prospect,
        LifecycleStage::New => pb::LifecycleStage::New,
        LifecycleStage::Active => pb::LifecycleStage::Active,
        LifecycleStage::Loyal => pb::LifecycleStage::Loyal,
        LifecycleStage::AtRisk => pb::LifecycleStage::AtRisk,
        LifecycleStage::Churned => pb::LifecycleStage::Churned,
    }
}

/// A computed score as the API's message: the specification that
/// `encode::ScoreEncoder`, which recomputes and online scoring use, is
/// checked against byte for byte (it writes the same bytes without building
/// the message).
#[cfg(test)]
pub(crate) fn to_proto(
    s: &CustomerScores,
    id: &str,
    currency: Option<Currency>,
    version: &str,
    as_of: DateTime<Utc>,
    at: DateTime<Utc>,
    ranks_stale: bool,
) -> pb::CustomerScore {
    pb::CustomerScore {
        customer_id: id.to_owned(),
        rfm: Some(pb::RfmScore {
            recency_days: s.recency_days,
            frequency: i64::from(s.frequency),
            monetary: money(currency, s.monetary_nanos),
            r_score: i32::from(s.r_score),
            f_score: i32::from(s.f_score),
            m_score: i32::from(s.m_score),
            segment: s.segment.as_str().to_owned(),
            weighted_score: s.weighted_score,
            ranks_stale,
        }),
        clv: Some(pb::ClvScore {
            historical_value: money(currency, s.monetary_nanos),
            simple_clv: units(currency, s.simple_clv),
            expected_purchases_365d: s.expected_purchases_365d,
            p_alive: s.p_alive,
            predicted_clv_365d: units(currency, s.predicted_clv_365d),
            expected_occasion_value: units(currency, s.expected_occasion_value),
        }),
        churn: Some(pb::ChurnScore {
            probability: s.churn_probability,
            risk: churn_risk(s) as i32,
            reasons: s.churn_reasons.iter().map(|r| (*r).to_owned()).collect(),
        }),
        value_tier: value_tier(s) as i32,
        value_quadrant: value_quadrant(s) as i32,
        lifecycle_stage: lifecycle_stage(s) as i32,
        loyalty_index: s.loyalty_index,
        profitability: Some(pb::Profitability {
            revenue: money(currency, s.revenue_nanos),
            cost: money(currency, s.cost_nanos),
            margin: money(currency, s.margin_nanos),
        }),
        computed_at: Some(to_timestamp(at)),
        model_version: version.to_owned(),
        as_of: Some(to_timestamp(as_of)),
    }
}

/// Starts a recompute; the stream reports progress and ends once every new
/// score is stored and cached.
/// It waits for a population slot first (`limits.population_calls`).
pub(crate) fn recompute(
    store: ScoringStore,
    cache: Cache,
    gate: PopulationGate,
    req: pb::RecomputeScoresRequest,
) -> ApiResult<ProgressStream> {
    let as_of = optional_timestamp(req.as_of.as_ref(), "as_of")?.unwrap_or_else(now);
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let _slot = gate.enter().await;
        if let Err(e) = run(&store, &cache, as_of, &tx).await {
            let _ = tx.send(Err(to_status(e))).await;
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// What online scoring needs from the last recompute: the model it used,
/// the population baseline, and its as-of day. Stored as JSON beside the
/// scores (`scoring_baselines`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ScoringRun {
    /// Empty, with no model, when the population identified none.
    pub model_version: String,
    pub model: Option<FittedModel>,
    pub baseline: Baseline,
    pub as_of_day: i32,
}

/// A recompute's population, scored, with the model it was scored with.
struct ScoredPopulation {
    snapshot: ScoringSnapshot,
    /// None when the data identifies no model (nobody has made a second
    /// repeat purchase): the population is then scored without one
    /// (`score_customer` says what that leaves out).
    model: Option<pb::ModelFit>,
    /// The recompute fitted `model` itself; it is not recorded yet.
    fitted_now: bool,
    scores: Vec<CustomerScores>,
    /// By customer number (see [`BuyerRecords`]).
    currencies: Vec<Option<Currency>>,
    /// Positions in the snapshot's facts (see [`BuyerRecords`]).
    prospects: Vec<usize>,
    /// Customers read and not scored (see [`read_but_unscored`]).
    unscored: Vec<String>,
    baseline: Baseline,
}

/// Scores the snapshot as of `as_of` with `pinned`, the newest model
/// FitModel recorded. Without one (no FitModel yet, or only models earlier
/// recomputes fitted for themselves) it fits a model on the same summaries
/// it scores, so the provisional model follows the data until an analyst
/// records one. CPU-bound: run it on a blocking thread.
fn score_snapshot(
    mut snapshot: ScoringSnapshot,
    pinned: Option<pb::ModelFit>,
    as_of: DateTime<Utc>,
    at: DateTime<Utc>,
) -> ApiResult<ScoredPopulation> {
    let as_of_day = day_of(as_of);
    // Taken out, so they are freed once scored rather than held while the
    // scores are stored.
    let summaries = std::mem::take(&mut snapshot.summaries);
    let (model, fitted_now) = match pinned {
        Some(model) => (Some(model), false),
        None => match models::fit_population(&summaries, as_of, at) {
            Ok(model) => (
                Some(pb::ModelFit {
                    fitted_by_recompute: true,
                    ..model
                }),
                true,
            ),
            Err(e) if e.reason == models::NOT_IDENTIFIABLE => {
                tracing::info!(reason = %e.message, "scoring without a purchase model");
                (None, false)
            }
            Err(e) => return Err(e),
        },
    };
    let fitted = model.as_ref().map(models::fitted);
    let BuyerRecords {
        signals,
        currencies,
        prospects,
    } = buyer_records(&summaries, &snapshot, as_of_day);
    let unscored = read_but_unscored(&summaries, &snapshot);
    let (scores, baseline) = score_population_with_baseline(
        &summaries,
        Some(&signals),
        fitted.as_ref(),
        &ModelSettings::default(),
        as_of_day,
    );
    Ok(ScoredPopulation {
        snapshot,
        model,
        fitted_now,
        scores,
        currencies,
        prospects,
        unscored,
        baseline,
    })
}

/// Customers the snapshot holds whom a recompute does not score: an erased
/// customer without purchases up to the scoring date, or a customer whose
/// purchases all come later and who has no other record. Their stored
/// scores stay as they are (see `RecomputeRead`). Usually nobody, and found
/// without a lookup per customer: the snapshot's ids are in id order, and
/// only erased records and customers without a summary are looked up.
fn read_but_unscored(summaries: &[CustomerSummary], snapshot: &ScoringSnapshot) -> Vec<String> {
    let mut summarized = vec![false; snapshot.ids.len()];
    for s in summaries {
        summarized[s.customer as usize] = true;
    }
    let is_buyer = |id: &str| {
        snapshot
            .ids
            .binary_search_by(|x| x.as_str().cmp(id))
            .is_ok_and(|i| summarized[i])
    };
    let mut unscored: Vec<String> = snapshot
        .facts
        .iter()
        .filter(|(id, f)| f.erased && !is_buyer(id))
        .map(|(id, _)| id.to_owned())
        .collect();
    unscored.extend(
        snapshot
            .ids
            .iter()
            .zip(&summarized)
            .filter(|(id, summarized)| !**summarized && !snapshot.facts.contains(id))
            .map(|(id, _)| id.clone()),
    );
    unscored.sort_unstable();
    unscored
}

/// A customer's signals from outside purchases.
fn signal_of(facts: Option<&CustomerFacts>, as_of_day: i32) -> CustomerSignals {
    facts.map_or_else(CustomerSignals::default, |f| CustomerSignals {
        interactions: f.interactions,
        latest_nps: f.latest_nps.and_then(|n| u8::try_from(n).ok()),
        oldest_open_complaint_days: f
            .oldest_open_complaint_day
            .map(|d| i64::from(as_of_day - d)),
        complaints: f.complaints,
    })
}

/// What the snapshot's customer records add to its summaries.
struct BuyerRecords {
    /// Each summarized customer's signals from outside purchases, by
    /// summary.
    signals: Vec<CustomerSignals>,
    /// The currency of each summarized customer's purchases, by customer
    /// number: looked up here once, with the signals, rather than again
    /// for each score written.
    currencies: Vec<Option<Currency>>,
    /// The read model's other customers (no purchase up to the scoring
    /// date), in id order, by their positions in the snapshot's facts. An
    /// erased customer without purchases is nobody.
    prospects: Vec<usize>,
}

fn buyer_records(
    summaries: &[CustomerSummary],
    snapshot: &ScoringSnapshot,
    as_of_day: i32,
) -> BuyerRecords {
    let facts = &snapshot.facts;
    // Summaries come in customer order, which is id order in a recompute's
    // snapshot, as the facts are: the cursor walks them once.
    let mut cursor = facts.cursor();
    let mut bought = vec![false; facts.len()];
    let mut currencies = vec![None; snapshot.ids.len()];
    let signals = summaries
        .iter()
        .map(|s| {
            let record = cursor.find(&snapshot.ids[s.customer as usize]).map(|at| {
                bought[at] = true;
                facts.at(at).1
            });
            currencies[s.customer as usize] = record.and_then(|f| f.currency);
            signal_of(record, as_of_day)
        })
        .collect();
    let prospects = facts
        .iter()
        .zip(&bought)
        .enumerate()
        .filter(|(_, ((_, f), bought))| !f.erased && !**bought)
        .map(|(at, _)| at)
        .collect();
    BuyerRecords {
        signals,
        currencies,
        prospects,
    }
}

/// A prospect's score (see `score_prospect`): lifecycle PROSPECT, loyalty,
/// the cost to serve; every purchase figure 0 and every label unspecified.
/// Amounts need a currency, which a customer without purchases may not have.
fn prospect_row(
    prospect: usize,
    snapshot: &ScoringSnapshot,
    as_of_day: i32,
    version: &str,
    as_of: DateTime<Utc>,
    at: DateTime<Utc>,
) -> ScoreRow {
    let (id, facts) = snapshot.facts.at(prospect);
    let p = score_prospect(
        &signal_of(Some(facts), as_of_day),
        &ModelSettings::default(),
    );
    let currency = facts.currency;
    let zero = money(currency, 0);
    let proto = pb::CustomerScore {
        customer_id: id.to_owned(),
        rfm: Some(pb::RfmScore {
            monetary: zero.clone(),
            ..Default::default()
        }),
        clv: Some(pb::ClvScore {
            historical_value: zero.clone(),
            ..Default::default()
        }),
        churn: Some(pb::ChurnScore::default()),
        lifecycle_stage: pb::LifecycleStage::Prospect as i32,
        loyalty_index: p.loyalty_index,
        profitability: Some(pb::Profitability {
            revenue: zero,
            cost: money(currency, p.cost_nanos),
            margin: money(currency, -p.cost_nanos),
        }),
        computed_at: Some(to_timestamp(at)),
        model_version: version.to_owned(),
        as_of: Some(to_timestamp(as_of)),
        ..Default::default()
    };
    stored(proto, None)
}

/// The stored forms of `scores`: each encoded, with the labels
/// distributions count. `currencies` by customer number (see
/// [`BuyerRecords`]). The encodings are written one after the other into
/// one buffer, which the rows share: a recompute's million scores were a
/// million allocations, each written on fresh memory and freed by another
/// thread (together half a second of a core).
fn score_rows<'s>(
    scores: impl ExactSizeIterator<Item = &'s CustomerScores>,
    snapshot: &ScoringSnapshot,
    currencies: &[Option<Currency>],
    encoder: &mut ScoreEncoder<'_>,
    ranks_stale: bool,
) -> Vec<ScoreRow> {
    let scores: Vec<&CustomerScores> = scores.collect();
    let mut buf = Vec::with_capacity(scores.len() * 320);
    let mut rows = Vec::with_capacity(scores.len());
    let mut ends = Vec::with_capacity(scores.len());
    for (i, s) in scores.iter().enumerate() {
        // What the scores a few places ahead lead to, loaded meanwhile (see
        // `prefetch`): first the score, then (its customer number read by
        // now) the id's place, the currency and the churn reasons, then the
        // id's bytes.
        if let Some(ahead) = scores.get(i + 6) {
            prefetch(*ahead);
        }
        if let Some(ahead) = scores.get(i + 3) {
            let customer = ahead.customer as usize;
            if let Some(id) = snapshot.ids.get(customer) {
                prefetch(id);
            }
            if let Some(currency) = currencies.get(customer) {
                prefetch(currency);
            }
            prefetch(ahead.churn_reasons.as_slice());
        }
        if let Some(id) = scores
            .get(i + 1)
            .and_then(|a| snapshot.ids.get(a.customer as usize))
        {
            prefetch(id.as_bytes());
        }
        let id = &snapshot.ids[s.customer as usize];
        let currency = currencies[s.customer as usize];
        encoder.encode(s, id, currency, ranks_stale, &mut buf);
        ends.push(buf.len());
        rows.push(ScoreRow {
            customer_id: id.clone(),
            labels: labels(
                Some(s.segment),
                value_tier(s) as i32,
                value_quadrant(s) as i32,
                churn_risk(s) as i32,
                lifecycle_stage(s) as i32,
            ),
            score: Bytes::new(),
        });
    }
    let buf = Bytes::from(buf);
    let mut start = 0;
    for (row, end) in rows.iter_mut().zip(ends) {
        row.score = buf.slice(start..end);
        start = end;
    }
    rows
}

/// What a recompute encodes, shared by its two encoders (see `run`): each
/// score is at a place, a buyer's its index in `scores`, a prospect's
/// `scores.len()` plus its index in `prospects`.
struct Encodable {
    snapshot: ScoringSnapshot,
    scores: Vec<CustomerScores>,
    currencies: Vec<Option<Currency>>,
    prospects: Vec<usize>,
    version: String,
    as_of: DateTime<Utc>,
    at: DateTime<Utc>,
}

impl Encodable {
    fn buyers(&self) -> u32 {
        self.scores.len() as u32
    }

    fn id(&self, place: u32) -> &str {
        match place.checked_sub(self.buyers()) {
            None => &self.snapshot.ids[self.scores[place as usize].customer as usize],
            Some(p) => self.snapshot.facts.at(self.prospects[p as usize]).0,
        }
    }

    /// Every place in id order: the buyers (numbered in id order) merged
    /// with the prospects (in the facts' id order).
    fn id_order(&self) -> Vec<u32> {
        let buyers = self.buyers();
        merged(buyers, self.prospects.len() as u32, |place| self.id(place))
    }

    /// The buyers in the cache's bulk-write order, so each chunk's refresh
    /// fills whole Redis hashes, then the prospects. An order of places, as
    /// moving the scores themselves (a million swaps of 200-byte scores)
    /// took 0.15 s.
    fn cache_order(&self, cache: &Cache) -> Vec<u32> {
        let mut order: Vec<u32> = if cache.orders_bulk_writes() {
            let mut key = String::new();
            let mut keyed: Vec<(u32, u32)> = (0..self.buyers())
                .map(|place| {
                    cache_key_into(&mut key, self.id(place));
                    (cache.bulk_write_order(&key), place)
                })
                .collect();
            keyed.sort_unstable();
            keyed.into_iter().map(|(_, place)| place).collect()
        } else {
            (0..self.buyers()).collect()
        };
        order.extend(self.buyers()..self.buyers() + self.prospects.len() as u32);
        order
    }

    /// The stored forms of the scores at `places`, in that order.
    fn rows(&self, places: &[u32], encoder: &mut ScoreEncoder<'_>) -> Vec<ScoreRow> {
        let mut rows = Vec::with_capacity(places.len());
        let buyers = self.buyers();
        for run in places.chunk_by(|a, b| (*a < buyers) == (*b < buyers)) {
            if run[0] < buyers {
                let scores = run.iter().map(|&p| &self.scores[p as usize]);
                rows.extend(score_rows(
                    scores,
                    &self.snapshot,
                    &self.currencies,
                    encoder,
                    false,
                ));
            } else {
                rows.extend(run.iter().map(|&p| {
                    prospect_row(
                        self.prospects[(p - buyers) as usize],
                        &self.snapshot,
                        day_of(self.as_of),
                        &self.version,
                        self.as_of,
                        self.at,
                    )
                }));
            }
        }
        rows
    }
}

/// The places `0..left` and `left..left + right`, each in order of `key`,
/// merged into one order of `key` (ties: left first). Every place comes
/// once, whatever the keys.
fn merged<'k>(left: u32, right: u32, key: impl Fn(u32) -> &'k str) -> Vec<u32> {
    let end = left + right;
    let mut order = Vec::with_capacity(end as usize);
    let (mut l, mut r) = (0, left);
    while l < left || r < end {
        if r == end || (l < left && key(l) <= key(r)) {
            order.push(l);
            l += 1;
        } else {
            order.push(r);
            r += 1;
        }
    }
    order
}

/// Encodes the population's scores on a blocking thread, in the order
/// `order` gives, and sends their stored forms a chunk at a time (at most
/// two chunks ahead of the receiver). Stops early when the receiver goes.
fn encode_in_background(
    population: &Arc<Encodable>,
    order: impl FnOnce(&Encodable) -> Vec<u32> + Send + 'static,
) -> (mpsc::Receiver<Vec<ScoreRow>>, tokio::task::JoinHandle<()>) {
    let (chunks, encoded) = mpsc::channel::<Vec<ScoreRow>>(2);
    let population = population.clone();
    let encoder = tokio::task::spawn_blocking(move || {
        let places = order(&population);
        let mut encoder = ScoreEncoder::new(&population.version, population.as_of, population.at);
        for part in places.chunks(CHUNK) {
            if chunks
                .blocking_send(population.rows(part, &mut encoder))
                .is_err()
            {
                return; // the store step failed or the caller left
            }
        }
    });
    (encoded, encoder)
}

/// A score as stored, labelled for the distribution counts with the codes
/// of `SCORE_LABELS`: a segment's is its place in `Segment::ALL` after ""
/// (none, a prospect's), an enum's is its number.
fn stored(proto: pb::CustomerScore, segment: Option<Segment>) -> ScoreRow {
    ScoreRow {
        customer_id: proto.customer_id.clone(),
        labels: labels(
            segment,
            proto.value_tier,
            proto.value_quadrant,
            proto.churn.as_ref().map_or(0, |c| c.risk),
            proto.lifecycle_stage,
        ),
        score: proto.encode_to_vec().into(),
    }
}

/// A score's label codes (see [`stored`]), from its segment and enum
/// numbers.
fn labels(segment: Option<Segment>, tier: i32, quadrant: i32, risk: i32, stage: i32) -> [i16; 5] {
    let code = |n: i32| i16::try_from(n).unwrap_or_default();
    [
        segment.map_or(0, |s| s as i16 + 1),
        code(tier),
        code(quadrant),
        code(risk),
        code(stage),
    ]
}

async fn run(
    store: &ScoringStore,
    cache: &Cache,
    as_of: DateTime<Utc>,
    tx: &mpsc::Sender<Result<pb::RecomputeScoresResponse, Status>>,
) -> ApiResult<()> {
    let as_of_day = day_of(as_of);
    let started = std::time::Instant::now();
    let snapshot = store.snapshot(READ_MODEL, as_of_day).await?;
    let read = started.elapsed();
    let pinned = models::newest(store)
        .await?
        .filter(|m| !m.fitted_by_recompute);
    let at = now();
    let population =
        tokio::task::spawn_blocking(move || score_snapshot(snapshot, pinned, as_of, at))
            .await
            .map_err(|e| ApiError::internal(format!("scoring: {e}")))??;
    if let Some(model) = population.model.as_ref().filter(|_| population.fitted_now) {
        models::save(store, model).await?;
    }
    let ScoredPopulation {
        snapshot,
        model,
        scores,
        currencies,
        prospects,
        unscored,
        baseline,
        ..
    } = population;
    let model_version = model
        .as_ref()
        .map(|m| m.model_version.clone())
        .unwrap_or_default();
    let fitted = model.as_ref().map(models::fitted);
    let total = (scores.len() + prospects.len()) as i64;
    let scored = started.elapsed();
    let progress = |done: i64| pb::RecomputeScoresResponse {
        done,
        total,
        model_version: model_version.clone(),
        as_of: Some(to_timestamp(as_of)),
    };
    // The scores go to the store and to the cache at once, each in its own
    // order and so encoded twice, on two blocking threads:
    // - the store takes them in id order. On PostgreSQL it fills a fresh
    //   table that replaces the old one at the end (see
    //   `ScoringStore::begin_replacement`), and the new table's index builds
    //   then find their input sorted: 1.2 instead of 2.7 CPU-seconds at a
    //   million scores, more than the second encoding costs (BENCHMARKS.md,
    //   session 29). Elsewhere each chunk is saved as it comes.
    // - the cache takes them in its bulk-write order, so each chunk's
    //   refresh fills whole Redis hashes.
    // Until the swap, a miss can still load (and cache) a customer's
    // previous score, which the TTL bounds; a cache fill never replaces an
    // entry written meanwhile, so the two orders need no coordination.
    //
    // Online scoring goes on meanwhile (on PostgreSQL until the swap at the
    // end), so a customer may already have a newer score than this
    // recompute's, in the store and in the cache: before each chunk goes to
    // the cache, the scores saved since the last look are checked (a range
    // of the revision index) and such customers left out, so a purchase
    // that showed does not disappear again until the recompute ends; an
    // online score saved between a chunk's look and its cache write is
    // found by the next look and its entry dropped.
    let data_seq = snapshot.data_seq;
    let snapshot_revision = snapshot.score_revision;
    let replacement = store
        .begin_replacement(
            at,
            data_seq,
            RecomputeRead {
                revision: snapshot_revision,
                unscored,
            },
        )
        .await?;
    let population = Arc::new(Encodable {
        snapshot,
        scores,
        currencies,
        prospects,
        version: model_version.clone(),
        as_of,
        at,
    });
    let (mut for_store, store_encoder) = encode_in_background(&population, Encodable::id_order);
    let (mut for_cache, cache_encoder) = {
        let cache = cache.clone();
        encode_in_background(&population, move |p| p.cache_order(&cache))
    };
    let to_store = async {
        let mut done = 0;
        let mut replacement = replacement;
        while let Some(rows) = for_store.recv().await {
            match &mut replacement {
                Some(replacement) => replacement.write(&rows).await?,
                None => store.save_scores(at, data_seq, &rows).await?,
            }
            done += rows.len() as i64;
            if done < total {
                // A caller that went away does not stop the recompute: it
                // finishes, so the store and the cache agree.
                let _ = tx.send(Ok(progress(done))).await;
            }
        }
        let copied = started.elapsed();
        // The new table is indexed while the cache may still be taking
        // the last chunks; only the swap waits for them (below).
        let prepared = match replacement {
            Some(replacement) => Some(replacement.prepare().await?),
            None => None,
        };
        Ok::<_, ApiError>((prepared, copied))
    };
    let to_cache = async {
        let mut looked_up_to = snapshot_revision;
        let mut newer_online: HashSet<String> = HashSet::new();
        let mut caching: Option<tokio::task::JoinHandle<()>> = None;
        let mut cache_wait = std::time::Duration::ZERO;
        while let Some(mut rows) = for_cache.recv().await {
            let waited = std::time::Instant::now();
            if let Some(previous) = caching.take() {
                let _ = previous.await;
            }
            cache_wait += waited.elapsed();
            // Every earlier chunk is in the cache now, so an online score
            // saved since the last look may have been replaced there by one
            // of them (saved after that chunk's look, cached before its
            // write): such entries are dropped here, so reads load the
            // online scores now rather than after the recompute. Customers
            // still to come are left out of their chunks.
            let (newer, seen) = store.scores_newer_since(looked_up_to, data_seq).await?;
            looked_up_to = seen;
            if !newer.is_empty() {
                drop_cached(cache, &newer).await;
                newer_online.extend(newer);
            }
            if !newer_online.is_empty() {
                rows.retain(|r| !newer_online.contains(&r.customer_id));
            }
            let cache = cache.clone();
            caching = Some(tokio::spawn(
                async move { refresh_cache(&cache, rows).await },
            ));
        }
        let waited = std::time::Instant::now();
        if let Some(last) = caching.take() {
            let _ = last.await;
        }
        Ok::<_, ApiError>((cache_wait + waited.elapsed(), started.elapsed()))
    };
    let ((prepared, copied), (cache_wait, cached)) = tokio::try_join!(to_store, to_cache)?;
    for encoder in [store_encoder, cache_encoder] {
        encoder
            .await
            .map_err(|e| ApiError::internal(format!("encoding scores: {e}")))?;
    }
    // Every write of this recompute reaches the cache before its scores are
    // all committed, so none lands on top of a later online score...
    // ...but an online score saved just after the last chunk's check may
    // have reached the cache before that chunk did, which then replaced it
    // with this recompute's older score (for the TTL, an hour by default).
    // Every customer with a newer score than this recompute's is dropped
    // from the cache below, so reads load the newer scores from the store.
    let newer = match prepared {
        Some(prepared) => prepared.swap().await?,
        None => {
            store
                .scores_newer_since(snapshot_revision, data_seq)
                .await?
                .0
        }
    };
    let run = ScoringRun {
        model_version: model_version.clone(),
        model: fitted,
        baseline,
        as_of_day,
    };
    let json = serde_json::to_string(&run)
        .map_err(|e| ApiError::internal(format!("encoding the baseline: {e}")))?;
    let first = store.latest_baseline_id().await?.is_none();
    store
        .save_baseline(&model_version, at, data_seq, &json)
        .await?;
    if first && let Err(e) = score_the_first_recomputes_latecomers(store, cache, data_seq).await {
        // Best effort, as online scoring is: the next recompute scores them.
        tracing::warn!(error = %e, "could not score the customers who arrived during the first recompute");
    }
    let stored = started.elapsed();
    drop_cached(cache, &newer).await;
    tracing::info!(
        customers = total,
        read_ms = read.as_millis() as u64,
        score_ms = (scored - read).as_millis() as u64,
        // Caching overlaps with storing; `cache_wait_ms` is the time the
        // cache side waited for Redis between its chunks, `cache_ms` the
        // tail (dropping entries that online scores made stale).
        store_ms = (stored - scored).as_millis() as u64,
        // When, in the store step, the last score went to the store (the
        // new table indexed and swapped in after it) and to the cache.
        copied_ms = (copied - scored).as_millis() as u64,
        cached_ms = (cached - scored).as_millis() as u64,
        cache_wait_ms = cache_wait.as_millis() as u64,
        cache_ms = (started.elapsed() - stored).as_millis() as u64,
        "scores recomputed"
    );
    let _ = tx.send(Ok(progress(total))).await;
    // Freed once the recompute has answered, off the async workers: at a
    // million customers, three million allocations.
    tokio::task::spawn_blocking(move || drop(population));
    Ok(())
}

/// Online scoring needs a recompute's baseline, so until the first one is
/// saved it scores nobody: a customer whose data changed after the first
/// recompute read the read model at `read_at` (a lead created meanwhile, a
/// purchase of a customer that recompute scored from older data) would keep
/// no score, or a stale one, until the next recompute. With the baseline
/// saved, online scoring scores them here: customers without a score, and
/// those the feed consumer recorded as awaiting a baseline after `read_at`.
///
/// None is missed: the consumer records a batch's customers in the batch's
/// transaction when it saw no baseline before, and rescores them itself if
/// it sees one after the commit. A customer not rescored by the consumer
/// was committed before the baseline was saved, so before the list below is
/// read.
async fn score_the_first_recomputes_latecomers(
    store: &ScoringStore,
    cache: &Cache,
    read_at: i64,
) -> ApiResult<()> {
    // The read model's position before reading who is unscored: the scores
    // reflect at least that much (and a concurrent online score of later
    // data is not replaced, see `save_scores`).
    let data_seq = store.cursor(READ_MODEL).await?;
    let mut latecomers = store.customers_without_score().await?;
    latecomers.extend(store.awaiting_baseline_after(read_at).await?);
    latecomers.sort_unstable();
    latecomers.dedup();
    let online = OnlineScorer::new(store.clone(), cache.clone());
    for chunk in latecomers.chunks(1_000) {
        online.rescore(chunk.to_vec(), Vec::new(), data_seq).await?;
    }
    // Those recorded after `read_at` are scored now; those before it, by the
    // recompute. (A batch that looked for a baseline before it was saved
    // and commits after this may leave rows: its consumer saw the baseline
    // after the commit and scored them, and nothing reads them again.)
    store.clear_awaiting_baseline().await?;
    if !latecomers.is_empty() {
        tracing::info!(
            customers = latecomers.len(),
            "scored customers who reached the read model during the first recompute"
        );
    }
    Ok(())
}

/// Drops the cached scores of `customers`, which have newer scores in the
/// store than a recompute may have cached; on failure they expire within
/// the TTL.
async fn drop_cached(cache: &Cache, customers: &[String]) {
    if customers.is_empty() {
        return;
    }
    let keys: Vec<String> = customers.iter().map(|id| cache_key(id)).collect();
    if let Err(e) = cache.invalidate(&keys).await {
        tracing::warn!(
            error = %e,
            customers = keys.len(),
            "could not drop cached scores older than online ones; they expire within the TTL"
        );
    }
}

/// Writes new scores over cached ones (pipelined); on failure they expire
/// within the TTL. The encoded scores move into the cache's buffers, not
/// copied: a recompute refreshes a million.
async fn refresh_cache(cache: &Cache, rows: Vec<ScoreRow>) {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let entries = rows
            .by_ref()
            .take(CHUNK)
            .map(|r| (cache_key(&r.customer_id), r.score))
            .collect();
        if let Err(e) = cache.put_many(entries).await {
            tracing::warn!(error = %e, "could not refresh cached scores; they expire within the TTL");
        }
    }
}

type HeldRun = (i64, Arc<ScoringRun>);

/// Online scoring: rescoring customers whose purchases just changed,
/// between recomputes, against the last recompute's model and baseline.
#[derive(Clone)]
pub(crate) struct OnlineScorer {
    store: ScoringStore,
    cache: Cache,
    /// The run in use and its baseline id.
    held: Arc<Mutex<Option<HeldRun>>>,
    /// A baseline has been seen (baselines are never removed).
    baseline_seen: Arc<AtomicBool>,
}

impl OnlineScorer {
    pub(crate) fn new(store: ScoringStore, cache: Cache) -> Self {
        Self {
            store,
            cache,
            held: Arc::default(),
            baseline_seen: Arc::default(),
        }
    }

    /// Whether any recompute has saved a baseline, so that [`Self::rescore`]
    /// can score. Before the first, the feed consumer records the customers
    /// it changes instead (`ReadModelBatch::awaiting_baseline`).
    pub(crate) async fn has_baseline(&self) -> ApiResult<bool> {
        if self.baseline_seen.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let seen = self.store.latest_baseline_id().await?.is_some();
        self.baseline_seen.store(seen, Ordering::Relaxed);
        Ok(seen)
    }

    /// The newest recompute's run, reloaded when another one lands.
    async fn current(&self) -> ApiResult<Option<Arc<ScoringRun>>> {
        let Some(latest) = self.store.latest_baseline_id().await? else {
            return Ok(None);
        };
        if let Some((id, run)) = &*self.held.lock().expect("online run lock")
            && *id == latest
        {
            return Ok(Some(run.clone()));
        }
        let Some((id, _, json)) = self.store.latest_baseline().await? else {
            return Ok(None);
        };
        let run: Arc<ScoringRun> = Arc::new(
            serde_json::from_str(&json)
                .map_err(|e| ApiError::internal(format!("stored baseline {id}: {e}")))?,
        );
        *self.held.lock().expect("online run lock") = Some((id, run.clone()));
        Ok(Some(run))
    }

    /// Rescores `customers` from the read model as it is after the feed
    /// batch that ended at `data_seq`: their own figures (x, t_x, T,
    /// monetary; P(alive), expected purchases, CLV, churn, lifecycle,
    /// loyalty, profitability) exactly, their ranks, tier and quadrant
    /// placed against the last recompute's population (`ranks_stale`).
    /// `created`, customers created in that batch, are scored if they are
    /// prospects (no purchase yet), so a new customer has a score at once.
    /// Before the first recompute there is nothing to update.
    pub(crate) async fn rescore(
        &self,
        buyers: Vec<String>,
        created: Vec<String>,
        data_seq: i64,
    ) -> ApiResult<usize> {
        if buyers.is_empty() && created.is_empty() {
            return Ok(0);
        }
        let Some(run) = self.current().await? else {
            return Ok(0);
        };
        // As of now: the new purchase happened now. A recompute as of a later
        // day (planning ahead) keeps its day.
        let at = now();
        let as_of_day = day_of(at).max(run.as_of_day);
        let as_of = if as_of_day == day_of(at) {
            at
        } else {
            DateTime::from_timestamp(i64::from(as_of_day) * 86_400, 0).unwrap_or(at)
        };
        let rescored: HashSet<&str> = buyers.iter().map(String::as_str).collect();
        let mut customers: Vec<String> = created
            .iter()
            .filter(|id| !rescored.contains(id.as_str()))
            .cloned()
            .collect();
        customers.extend(buyers.iter().cloned());
        let started = std::time::Instant::now();
        let snapshot = self.store.histories(&customers, as_of_day).await?;
        let read = started.elapsed();
        let summaries = &snapshot.summaries;
        let BuyerRecords {
            signals,
            currencies,
            prospects,
        } = buyer_records(summaries, &snapshot, as_of_day);
        let settings = ModelSettings::default();
        let mut encoder = ScoreEncoder::new(&run.model_version, as_of, at);
        let scores: Vec<CustomerScores> = summaries
            .iter()
            .zip(&signals)
            // A created customer with purchases already has its score.
            .filter(|(s, _)| rescored.contains(snapshot.ids[s.customer as usize].as_str()))
            .map(|(s, signal)| {
                score_customer(
                    s,
                    signal,
                    run.model.as_ref(),
                    &settings,
                    &run.baseline,
                    as_of_day,
                )
            })
            .collect();
        let mut rows = score_rows(scores.iter(), &snapshot, &currencies, &mut encoder, true);
        rows.extend(
            prospects
                .iter()
                .map(|&p| prospect_row(p, &snapshot, as_of_day, &run.model_version, as_of, at)),
        );
        if rows.is_empty() {
            return Ok(0);
        }
        let scored = started.elapsed();
        self.store.save_scores(at, data_seq, &rows).await?;
        let saved = started.elapsed();
        let customers = rows.len();
        refresh_cache(&self.cache, rows).await;
        tracing::debug!(
            customers,
            read_ms = read.as_millis() as u64,
            score_ms = (scored - read).as_millis() as u64,
            save_ms = (saved - scored).as_millis() as u64,
            cache_ms = (started.elapsed() - saved).as_millis() as u64,
            "rescored online"
        );
        Ok(customers)
    }
}

fn decode(bytes: &[u8]) -> ApiResult<pb::CustomerScore> {
    pb::CustomerScore::decode(bytes).map_err(|e| ApiError::internal(format!("stored score: {e}")))
}

/// Store reads of encoded scores after cache misses, by customer id: a
/// load's result holds the scores it found (ids without one are absent).
pub(crate) type Lookups = SingleFlight<ApiResult<Arc<HashMap<String, Bytes>>>>;

/// The encoded scores of `ids` (each a cache miss) that the store holds,
/// filled into the cache where it still has none (a score written since the
/// store read is newer, and stays). Concurrent calls share loads: an id another
/// call is loading waits for that load, and the rest are read in one query,
/// so a stampede of reads (single or batched) on expired entries reads
/// each score once. `cache_answered`: the caller's cache read did not fail
/// (a failed or timed-out cache is not asked again before the store).
async fn load_missing(
    store: &ScoringStore,
    cache: &Cache,
    lookups: &Lookups,
    ids: &[String],
    cache_answered: bool,
) -> ApiResult<HashMap<String, Bytes>> {
    let loads = lookups
        .run(ids, |ids| {
            let (store, cache) = (store.clone(), cache.clone());
            async move {
                // A load that just finished may have refilled the cache.
                let again = if cache_answered {
                    let keys: Vec<String> = ids.iter().map(|id| cache_key(id)).collect();
                    cache.look_again(&keys).await.ok()
                } else {
                    None
                };
                let again = again.unwrap_or_else(|| vec![None; ids.len()]);
                let mut found = HashMap::with_capacity(ids.len());
                let mut wanted = Vec::new();
                for (id, hit) in ids.into_iter().zip(again) {
                    match hit {
                        Some(bytes) => {
                            found.insert(id, bytes);
                        }
                        None => wanted.push(id),
                    }
                }
                if !wanted.is_empty() {
                    cache
                        .stats()
                        .loads
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let stored: Vec<(String, Bytes)> = store
                        .scores(&wanted)
                        .await?
                        .into_iter()
                        .map(|(id, b)| (id, Bytes::from(b)))
                        .collect();
                    let _ = cache
                        .fill_many(
                            stored
                                .iter()
                                .map(|(id, b)| (cache_key(id), b.clone()))
                                .collect(),
                        )
                        .await;
                    found.extend(stored);
                }
                Ok(Arc::new(found))
            }
        })
        .await;
    let mut out = HashMap::with_capacity(ids.len());
    for load in loads {
        let load = load?;
        // A shared load may cover more ids than this call asked for.
        for id in ids {
            if let Some(bytes) = load.get(id) {
                out.insert(id.clone(), bytes.clone());
            }
        }
    }
    Ok(out)
}

pub(crate) async fn get(
    store: &ScoringStore,
    cache: &Cache,
    lookups: &Lookups,
    req: pb::GetScoreRequest,
) -> ApiResult<pb::ScoreReply> {
    let mut v = Violations::new();
    check_id(&mut v, "customer_id", &req.customer_id);
    v.finish()?;
    // Hits, the common case, go straight to the cache; only misses pay for
    // coalescing. Either way the score goes out as stored (this server
    // encoded it), not decoded and encoded again.
    let cache_answered = match cache.get(&cache_key(&req.customer_id)).await {
        Ok(Some(bytes)) => return Ok(pb::ScoreReply::from_encoded(bytes)),
        Ok(None) => true,
        Err(_) => false,
    };
    let id = std::slice::from_ref(&req.customer_id);
    let bytes = load_missing(store, cache, lookups, id, cache_answered)
        .await?
        .remove(&req.customer_id)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                "SCORE_NOT_FOUND",
                format!(
                    "no score for customer {:?}; unknown customer or not scored yet",
                    req.customer_id
                ),
            )
        })?;
    Ok(pb::ScoreReply::from_encoded(bytes))
}

pub(crate) async fn batch_get(
    store: &ScoringStore,
    cache: &Cache,
    lookups: &Lookups,
    req: pb::BatchGetScoresRequest,
) -> ApiResult<pb::BatchGetScoresResponse> {
    if req.customer_ids.len() > MAX_BATCH_IDS {
        return Err(ApiError::invalid_field(
            "customer_ids",
            format!("at most {MAX_BATCH_IDS} per call"),
        ));
    }
    let mut v = Violations::new();
    for (i, id) in req.customer_ids.iter().enumerate() {
        check_id(&mut v, &format!("customer_ids[{i}]"), id);
    }
    v.finish()?;
    let keys: Vec<String> = req.customer_ids.iter().map(|id| cache_key(id)).collect();
    let (cached, cache_answered) = match cache.get_many(&keys).await {
        Ok(cached) => (cached, true),
        Err(_) => (vec![None; keys.len()], false),
    };
    let misses: Vec<String> = req
        .customer_ids
        .iter()
        .zip(&cached)
        .filter(|(_, c)| c.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    let stored = if misses.is_empty() {
        HashMap::new()
    } else {
        load_missing(store, cache, lookups, &misses, cache_answered).await?
    };
    // Stored scores go out as they are, without a decode and re-encode.
    let mut response = pb::BatchGetScoresResponse::with_capacity(keys.len());
    for (id, hit) in req.customer_ids.iter().zip(&cached) {
        match hit.as_ref().or_else(|| stored.get(id)) {
            Some(bytes) => response.push_encoded(bytes.clone()),
            None => response.missing_ids.push(id.clone()),
        }
    }
    Ok(response)
}

pub(crate) async fn distribution(store: &ScoringStore) -> ApiResult<pb::ScoreDistribution> {
    let d = store.distribution().await?;
    let mut out = pb::ScoreDistribution {
        customers: d.customers,
        computed_at: d.computed_at.map(to_timestamp),
        ..Default::default()
    };
    for (column, key, count) in d.counts {
        let bucket = pb::DistributionBucket {
            key: key.to_owned(),
            count,
        };
        match column {
            // Prospects have no RFM segment; they are counted in `customers`.
            c if c == DISTRIBUTION_COLUMNS[0] && bucket.key.is_empty() => {}
            c if c == DISTRIBUTION_COLUMNS[0] => out.rfm_segments.push(bucket),
            c if c == DISTRIBUTION_COLUMNS[1] => out.value_tiers.push(bucket),
            c if c == DISTRIBUTION_COLUMNS[2] => out.value_quadrants.push(bucket),
            c if c == DISTRIBUTION_COLUMNS[3] => out.churn_risks.push(bucket),
            _ => out.lifecycle_stages.push(bucket),
        }
    }
    Ok(out)
}

/// Scores per StreamScores message: a few MB, well under the message limit.
const STREAM_PAGE: u64 = 2_000;

pub(crate) type ScoreStream =
    Pin<Box<dyn Stream<Item = Result<pb::StreamScoresResponse, Status>> + Send>>;

/// Every score saved after `after_revision`, page by page (keyset on
/// revision and customer id), then the stream ends.
pub(crate) fn stream(store: ScoringStore, req: pb::StreamScoresRequest) -> ApiResult<ScoreStream> {
    if req.after_revision < 0 {
        return Err(ApiError::invalid_field(
            "after_revision",
            "must not be negative",
        ));
    }
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        // Everything after the whole of `after_revision`, then page by page.
        let mut after: (i64, Option<String>) = (req.after_revision, None);
        loop {
            let page = match store
                .scores_after((after.0, after.1.as_deref()), STREAM_PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(to_status(e))).await;
                    return;
                }
            };
            let Some(last) = page.last() else { return };
            after = (last.0, Some(last.1.clone()));
            let mut msg = pb::StreamScoresResponse::default();
            for (revision, _, bytes) in &page {
                match decode(bytes) {
                    Ok(score) => {
                        msg.scores.push(score);
                        msg.revisions.push(*revision);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(to_status(e))).await;
                        return;
                    }
                }
            }
            let full = page.len() as u64 == STREAM_PAGE;
            if tx.send(Ok(msg)).await.is_err() || !full {
                return;
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

#[cfg(test)]
mod tests {
    use patron_domain::models::summary::{Purchase, summarize};

    use super::*;

    proptest::proptest! {
        /// The store's order of a recompute's scores: buyers and prospects,
        /// each sorted, come out as one sorted order holding every place
        /// once (the new table's index builds count on the order, the
        /// recompute on every place). Unsorted input still yields every
        /// place once.
        #[test]
        fn merged_places_are_in_key_order_each_once(
            mut left in proptest::collection::vec("[a-c]{0,3}", 0..40),
            mut right in proptest::collection::vec("[a-c]{0,3}", 0..40),
            sorted in proptest::bool::ANY,
        ) {
            if sorted {
                left.sort();
                right.sort();
            }
            let keys: Vec<&str> = left.iter().chain(&right).map(String::as_str).collect();
            let order = merged(left.len() as u32, right.len() as u32, |p| keys[p as usize]);
            let mut places = order.clone();
            places.sort_unstable();
            proptest::prop_assert_eq!(places, (0..keys.len() as u32).collect::<Vec<_>>());
            if sorted {
                let in_order: Vec<&str> = order.iter().map(|&p| keys[p as usize]).collect();
                proptest::prop_assert!(in_order.is_sorted(), "{:?}", in_order);
            }
        }
    }

    /// The label codes a score is stored with read back, through the
    /// migration's list, as the names of its segment and enums.
    #[test]
    fn stored_labels_read_back_as_their_names() {
        use patron_store::scoring::label_name;
        let labelled = |segment, tier, quadrant, risk, stage| {
            let proto = pb::CustomerScore {
                value_tier: tier,
                value_quadrant: quadrant,
                churn: Some(pb::ChurnScore {
                    risk,
                    ..Default::default()
                }),
                lifecycle_stage: stage,
                ..Default::default()
            };
            let codes = stored(proto, segment).labels;
            (0..5).map(|d| label_name(d, codes[d])).collect::<Vec<_>>()
        };
        assert_eq!(
            labelled(None, 0, 0, 0, 1)[0],
            "",
            "a prospect has no segment"
        );
        for segment in Segment::ALL {
            assert_eq!(labelled(Some(segment), 0, 0, 0, 0)[0], segment.as_str());
        }
        for n in 0..8 {
            let names = labelled(None, n, n, n, n);
            let want = [
                pb::ValueTier::try_from(n).map(|v| v.as_str_name()),
                pb::ValueQuadrant::try_from(n).map(|v| v.as_str_name()),
                pb::ChurnRisk::try_from(n).map(|v| v.as_str_name()),
                pb::LifecycleStage::try_from(n).map(|v| v.as_str_name()),
            ];
            for (dimension, want) in want.into_iter().enumerate() {
                // A number no enum has (no version writes one) reads as "".
                assert_eq!(
                    names[dimension + 1],
                    want.unwrap_or(""),
                    "{n} of {dimension}"
                );
            }
        }
    }

    /// Who a recompute reads and leaves unscored: the replacement keeps
    /// their stored scores, and drops every other score it read.
    #[test]
    fn the_unscored_are_the_erased_without_purchases_and_the_later_buyers_without_a_record() {
        let record = |erased| CustomerFacts {
            erased,
            ..CustomerFacts::default()
        };
        let ids = [
            "a-buyer",
            "b-erased-buyer",
            "c-later-buyer",
            "d-later-buyer-on-record",
        ];
        let purchase = |customer, day| Purchase {
            customer,
            day,
            amount_nanos: 1_000_000_000,
            cost_nanos: 0,
        };
        let purchases = [
            purchase(0, 10),
            purchase(1, 10),
            purchase(2, 30),
            purchase(3, 30),
        ];
        let snapshot = ScoringSnapshot {
            ids: ids.map(String::from).to_vec(),
            facts: [
                ("a-buyer", record(false)),
                ("b-erased-buyer", record(true)),
                ("d-later-buyer-on-record", record(false)),
                ("e-prospect", record(false)),
                ("f-erased-prospect", record(true)),
            ]
            .into_iter()
            .map(|(id, f)| (id.to_owned(), f))
            .collect(),
            ..ScoringSnapshot::default()
        };
        let as_of_day = 20;
        let summaries = summarize(ids.len(), &purchases, as_of_day);
        assert_eq!(summaries.len(), 2);
        assert_eq!(
            read_but_unscored(&summaries, &snapshot),
            ["c-later-buyer", "f-erased-prospect"]
        );
        // Everyone else is scored: the buyers, erased or not, and the
        // prospects, among them a buyer of later days with a record.
        let prospects: Vec<&str> = buyer_records(&summaries, &snapshot, as_of_day)
            .prospects
            .into_iter()
            .map(|p| snapshot.facts.at(p).0)
            .collect();
        assert_eq!(prospects, ["d-later-buyer-on-record", "e-prospect"]);
        // With everyone scored, nobody.
        let summaries = summarize(ids.len(), &purchases, 40);
        let mut snapshot = snapshot;
        snapshot.facts.remove("f-erased-prospect");
        assert!(read_but_unscored(&summaries, &snapshot).is_empty());
    }
}
