//! Everything scored per customer, from summaries and a fitted model, for a
//! whole population at once (in parallel, without copying the summaries).
//! All thresholds live in [`ModelSettings`]; the formulas are documented
//! where they are computed and in `docs/models.md`.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{
    bgnbd::{BgNbdParams, BgNbdRow},
    gamma_gamma::GammaGammaParams,
    rfm::{RankCuts, RfmWeights, Segment},
    summary::CustomerSummary,
};

/// Every configurable threshold and rate of the models.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    pub rfm_weights: RfmWeights,
    /// churn.probability at or above which the risk is HIGH / MEDIUM.
    pub churn_high: f64,
    pub churn_medium: f64,
    /// Shares of customers (by predicted CLV) in the HIGH and MEDIUM tiers.
    pub tier_high_share: f64,
    pub tier_medium_share: f64,
    /// Days without a purchase after which a customer is CHURNED.
    pub churned_after_days: i64,
    /// Share of revenue that is margin, for predicted CLV.
    pub margin_rate: f64,
    /// Monthly discount rate for predicted CLV.
    pub monthly_discount_rate: f64,
    /// Expected lifespan for the simple CLV; `None`: 1 / observed annual churn rate.
    pub expected_lifespan_years: Option<f64>,
    /// One-time buyers: only customers observed at least this long estimate
    /// the share of buyers who ever come back.
    pub repeat_share_min_tenure_days: f64,
    /// LONG_SILENCE when the silence exceeds this multiple of the customer's
    /// own mean inter-purchase time.
    pub silence_factor: f64,
    /// OPEN_COMPLAINT when a complaint has been open this many days.
    pub open_complaint_days: i64,
    /// Cost to serve per interaction and per complaint, in nanos.
    pub interaction_cost_nanos: i64,
    pub complaint_cost_nanos: i64,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            rfm_weights: RfmWeights::ahp_default(),
            churn_high: 0.7,
            churn_medium: 0.4,
            tier_high_share: 0.2,
            tier_medium_share: 0.3,
            churned_after_days: 365,
            margin_rate: 0.3,
            monthly_discount_rate: 0.01,
            expected_lifespan_years: None,
            repeat_share_min_tenure_days: 180.0,
            silence_factor: 2.5,
            open_complaint_days: 14,
            interaction_cost_nanos: 2_000_000_000,
            complaint_cost_nanos: 15_000_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChurnRisk {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueTier {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueQuadrant {
    Star,
    Grow,
    Maintain,
    Minimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleStage {
    Prospect,
    New,
    Active,
    Loyal,
    AtRisk,
    Churned,
}

/// Signals from outside the purchase history (feedback, contact history).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CustomerSignals {
    /// Latest NPS answer 0..=10.
    pub latest_nps: Option<u8>,
    /// Age in days of the oldest open complaint.
    pub oldest_open_complaint_days: Option<i64>,
    pub complaints: u32,
    pub interactions: u32,
}

/// The fitted purchase models.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FittedModel {
    pub bg_nbd: BgNbdParams,
    pub gamma_gamma: GammaGammaParams,
}

/// The churn reason codes that come from the customer's purchase timing
/// (see `docs/models.md`); every MEDIUM or HIGH churn risk carries one of
/// them or `LOW_RETURN_RATE`.
pub const TIMING_REASONS: [&str; 3] = ["LONG_SILENCE", "OVERDUE", "NO_REPEAT_PURCHASE"];

/// Population facts the one-time-buyer churn rule uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneTimeBuyerRule {
    /// Share of (long enough observed) customers who ever made a repeat purchase.
    pub repeat_share: f64,
    /// Distinct days from first to second purchase among repeat buyers,
    /// ascending, each with the number of repeat buyers at or below it (a
    /// cumulative histogram: gaps are whole days, so it stays small).
    pub first_gaps: Vec<(f64, u64)>,
}

impl OneTimeBuyerRule {
    pub fn from_population(summaries: &[CustomerSummary], settings: &ModelSettings) -> Self {
        let observed: Vec<&CustomerSummary> = summaries
            .iter()
            .filter(|s| s.t >= settings.repeat_share_min_tenure_days)
            .collect();
        let base: Vec<&CustomerSummary> = if observed.is_empty() {
            summaries.iter().collect()
        } else {
            observed
        };
        // The posterior mean under a uniform prior ((k + 1) / (n + 2), the
        // rule of succession), not k / n: a few customers none of whom has
        // come back yet (a new shop) say little, and k / n = 0 would call
        // every one of them churned for sure.
        let repeaters = base.iter().filter(|s| s.x > 0).count();
        let repeat_share = (repeaters as f64 + 1.0) / (base.len() as f64 + 2.0);
        let gaps: Vec<f64> = summaries.iter().filter_map(|s| s.first_gap).collect();
        Self::from_gaps(repeat_share, gaps)
    }

    /// The rule from the repeat share and each repeat buyer's first gap.
    pub fn from_gaps(repeat_share: f64, mut gaps: Vec<f64>) -> Self {
        gaps.sort_unstable_by(f64::total_cmp);
        let mut first_gaps: Vec<(f64, u64)> = Vec::new();
        for (i, g) in gaps.into_iter().enumerate() {
            match first_gaps.last_mut() {
                Some(last) if last.0 == g => last.1 = i as u64 + 1,
                _ => first_gaps.push((g, i as u64 + 1)),
            }
        }
        Self {
            repeat_share,
            first_gaps,
        }
    }

    fn repeat_buyers(&self) -> u64 {
        self.first_gaps.last().map_or(0, |g| g.1)
    }

    /// Churn probability of a one-time buyer silent for `silence` days.
    ///
    /// BG/NBD says such a customer is alive with probability 1, which is no
    /// use. Instead: a share q of customers ever buy again, and F(s) of those
    /// who do have done so within s days of their first purchase. Having
    /// seen no repeat in s days, Bayes gives P(will still return) =
    /// q(1 - F(s)) / (q(1 - F(s)) + 1 - q); churn is one minus that.
    pub fn churn_probability(&self, silence: f64) -> f64 {
        self.churn_probability_with(self.repeat_share, silence)
    }

    /// The same rule for a customer with `x` repeat purchases, used when
    /// there is no model (nobody has a second repeat purchase, so BG/NBD
    /// cannot say). The customer's own chance of buying again is the
    /// population's share q updated by their record, as if q were one
    /// earlier observation: they came back after each of their first x
    /// purchases, so (x + q) / (x + 1). For x = 0 that is q, the one-time
    /// buyer rule; a customer who bought twice, the last time today, gets
    /// churn 1 - (1 + q) / 2, under one half.
    pub fn churn_probability_after(&self, x: u32, silence: f64) -> f64 {
        let x = f64::from(x);
        self.churn_probability_with((x + self.repeat_share) / (x + 1.0), silence)
    }

    fn churn_probability_with(&self, q: f64, silence: f64) -> f64 {
        let total = self.repeat_buyers();
        if total == 0 {
            return 1.0 - q;
        }
        let at_or_below = match self.first_gaps.partition_point(|g| g.0 <= silence) {
            0 => 0,
            i => self.first_gaps[i - 1].1,
        };
        let within = at_or_below as f64 / total as f64;
        let still = q * (1.0 - within);
        let denominator = still + (1.0 - q);
        if denominator <= 0.0 {
            0.0
        } else {
            1.0 - still / denominator
        }
    }

    /// The silence after which 90% of repeat buyers had come back.
    pub fn p90_gap(&self) -> f64 {
        let total = self.repeat_buyers();
        if total == 0 {
            return f64::INFINITY;
        }
        // The gap at position floor(0.9 (total - 1)) of the sorted gaps.
        let position = ((total - 1) as f64 * 0.9) as u64;
        let i = self.first_gaps.partition_point(|g| g.1 <= position);
        self.first_gaps[i].0
    }
}

/// What scoring one customer needs to know about the population, frozen
/// when the population is scored: the RFM rank cuts, the one-time-buyer
/// rule, the expected lifespan, the value-tier cuts and the medians of the
/// quadrants. Population scoring uses it for every customer; online scoring
/// keeps it between recomputes and places a customer's new figures against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub customers: u64,
    pub recency: RankCuts<i64>,
    pub frequency: RankCuts<u32>,
    pub monetary: RankCuts<i128>,
    pub one_time_buyers: OneTimeBuyerRule,
    /// Years, for the simple CLV.
    pub lifespan_years: f64,
    /// HIGH tier when predicted CLV is at least this (None: nobody).
    pub tier_high_from: Option<f64>,
    /// MEDIUM tier (unless HIGH) when predicted CLV is at least this.
    pub tier_medium_from: Option<f64>,
    /// Potential (predicted CLV) and current value (trailing 365-day margin)
    /// are high above these medians.
    pub clv_median: f64,
    pub current_median: f64,
}

/// All scores of one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerScores {
    pub customer: u32,
    pub recency_days: i64,
    pub frequency: u32,
    pub monetary_nanos: i128,
    pub r_score: u8,
    pub f_score: u8,
    pub m_score: u8,
    pub segment: Segment,
    pub weighted_score: f64,
    pub historical_value: f64,
    pub simple_clv: f64,
    pub p_alive: f64,
    pub expected_purchases_365d: f64,
    pub expected_occasion_value: f64,
    pub predicted_clv_365d: f64,
    pub churn_probability: f64,
    pub churn_risk: ChurnRisk,
    pub churn_reasons: Vec<&'static str>,
    /// None when scored without a model: both rank predicted CLV.
    pub value_tier: Option<ValueTier>,
    pub value_quadrant: Option<ValueQuadrant>,
    pub lifecycle: LifecycleStage,
    pub loyalty_index: f64,
    pub revenue_nanos: i128,
    pub cost_nanos: i128,
    pub margin_nanos: i128,
}

const NANOS: f64 = 1e9;

/// (1/12) Σ_{k=1..12} (1 + d)^-k: the value today of a year of revenue
/// spread evenly over 12 months and discounted monthly.
pub fn monthly_discount_factor(rate: f64) -> f64 {
    (1..=12).map(|k| (1.0 + rate).powi(-k)).sum::<f64>() / 12.0
}

/// Observed annual churn rate: the share of customers active in the year
/// before last who did not buy in the last year (None without such customers).
pub fn observed_annual_churn(summaries: &[CustomerSummary], as_of_day: i32) -> Option<f64> {
    let cohort: Vec<&CustomerSummary> = summaries
        .iter()
        .filter(|s| s.first_day <= as_of_day - 365)
        .collect();
    if cohort.is_empty() {
        return None;
    }
    let churned = cohort
        .iter()
        .filter(|s| s.last_day <= as_of_day - 365)
        .count();
    Some(churned as f64 / cohort.len() as f64)
}

/// Scores a population. `signals`, if given, is indexed like `summaries`.
///
/// `model` is None when the population identifies no purchase model (see
/// `FitError`): every customer is then scored without one (see
/// [`score_customer`]).
pub fn score_population(
    summaries: &[CustomerSummary],
    signals: Option<&[CustomerSignals]>,
    model: Option<&FittedModel>,
    settings: &ModelSettings,
    as_of_day: i32,
) -> Vec<CustomerScores> {
    score_population_with_baseline(summaries, signals, model, settings, as_of_day).0
}

/// [`score_population`], also returning the population's [`Baseline`] for
/// scoring customers one at a time until the next population run.
pub fn score_population_with_baseline(
    summaries: &[CustomerSummary],
    signals: Option<&[CustomerSignals]>,
    model: Option<&FittedModel>,
    settings: &ModelSettings,
    as_of_day: i32,
) -> (Vec<CustomerScores>, Baseline) {
    let recency: Vec<i64> = summaries
        .iter()
        .map(|s| s.recency_days(as_of_day))
        .collect();
    let frequency: Vec<u32> = summaries.iter().map(|s| s.transactions).collect();
    let monetary: Vec<i128> = summaries.iter().map(|s| s.total_nanos).collect();
    let (recency, (frequency, monetary)) = rayon::join(
        || RankCuts::of(&recency, true),
        || {
            rayon::join(
                || RankCuts::of(&frequency, false),
                || RankCuts::of(&monetary, false),
            )
        },
    );
    let lifespan_years = settings.expected_lifespan_years.unwrap_or_else(|| {
        observed_annual_churn(summaries, as_of_day)
            .filter(|c| *c > 0.01)
            .map_or(10.0, |c| 1.0 / c)
    });
    // Tiers and quadrants depend on everyone's predicted CLV: score first,
    // then cut, then place each customer.
    let mut baseline = Baseline {
        customers: summaries.len() as u64,
        recency,
        frequency,
        monetary,
        one_time_buyers: OneTimeBuyerRule::from_population(summaries, settings),
        lifespan_years,
        tier_high_from: None,
        tier_medium_from: None,
        clv_median: 0.0,
        current_median: 0.0,
    };
    let expected_365 = model.map(|model| {
        let histories: Vec<BgNbdRow> = summaries.iter().map(CustomerSummary::bg_nbd_row).collect();
        model
            .bg_nbd
            .conditional_expected_purchases_many(365.0, &histories)
    });
    let mut scores: Vec<CustomerScores> = summaries
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let signal = signals.and_then(|v| v.get(i)).copied().unwrap_or_default();
            let predicted = model.map(|model| {
                let expected = expected_365.as_ref().and_then(|e| e[i]).unwrap_or(0.0);
                (model, expected)
            });
            score_with_expected(s, &signal, predicted, settings, &baseline, as_of_day)
        })
        .collect();
    if model.is_some() {
        place_population(&mut baseline, &scores, summaries, settings);
        scores
            .par_iter_mut()
            .zip(summaries)
            .for_each(|(score, s)| place(score, s, &baseline));
    }
    (scores, baseline)
}

/// Scores one customer against a population's baseline: what online
/// scoring does between recomputes. For a member of that population, with
/// its summary unchanged, the result equals its population score.
///
/// Without a model (the population identified none)
/// there are no predictions: expected purchases, expected occasion value
/// and predicted CLV are 0, the value tier and quadrant (which rank
/// predicted CLV) are None, churn comes from the one-time-buyer rule for
/// every customer (silence since the last purchase against the population's
/// first repeat gaps; a repeat buyer's own record raises its chance of
/// buying again, [`OneTimeBuyerRule::churn_probability_after`]) and p_alive
/// is one minus that churn probability.
pub fn score_customer(
    s: &CustomerSummary,
    signal: &CustomerSignals,
    model: Option<&FittedModel>,
    settings: &ModelSettings,
    baseline: &Baseline,
    as_of_day: i32,
) -> CustomerScores {
    let predicted = model.map(|model| {
        let expected = model
            .bg_nbd
            .conditional_expected_purchases(365.0, s.x, s.t_x, s.t)
            .unwrap_or(0.0);
        (model, expected)
    });
    let mut score = score_with_expected(s, signal, predicted, settings, baseline, as_of_day);
    if model.is_some() {
        place(&mut score, s, baseline);
    }
    score
}

/// Everything but the value tier and quadrant; `predicted` is the model
/// and the customer's expected purchases in the next 365 days under it.
fn score_with_expected(
    s: &CustomerSummary,
    signal: &CustomerSignals,
    predicted: Option<(&FittedModel, f64)>,
    settings: &ModelSettings,
    baseline: &Baseline,
    as_of_day: i32,
) -> CustomerScores {
    let rule = &baseline.one_time_buyers;
    let p90_gap = rule.p90_gap();
    let discount = monthly_discount_factor(settings.monthly_discount_rate);
    let recency = s.recency_days(as_of_day);
    let silence = s.t - s.t_x;
    let (p_alive, expected, occasion_value, churn) = match predicted {
        Some((model, expected)) => {
            let p_alive = model.bg_nbd.p_alive(s.x, s.t_x, s.t);
            let occasion_value = model
                .gamma_gamma
                .conditional_expected_value(s.x, s.repeat_mean_value);
            let churn = if s.x > 0 {
                1.0 - p_alive
            } else {
                rule.churn_probability(silence)
            };
            (p_alive, expected, occasion_value, churn)
        }
        None => {
            let churn = rule.churn_probability_after(s.x, silence);
            (1.0 - churn, 0.0, 0.0, churn)
        }
    };
    let predicted_clv = expected * occasion_value * settings.margin_rate * discount;
    let historical = s.total_nanos as f64 / NANOS;
    let tenure_years = ((s.t + 1.0) / 365.25).max(1.0 / 12.0);
    let aov = historical / f64::from(s.transactions.max(1));
    let simple_clv = aov * (f64::from(s.transactions) / tenure_years) * baseline.lifespan_years;

    let risk = if churn >= settings.churn_high {
        ChurnRisk::High
    } else if churn >= settings.churn_medium {
        ChurnRisk::Medium
    } else {
        ChurnRisk::Low
    };
    let mut reasons = Vec::new();
    let own_rhythm = if s.x > 0 {
        s.t_x / f64::from(s.x)
    } else {
        p90_gap
    };
    if silence > settings.silence_factor * own_rhythm.max(1.0) {
        reasons.push("LONG_SILENCE");
    } else if s.x > 0 && silence > own_rhythm.max(1.0) {
        reasons.push("OVERDUE");
    }
    if signal.latest_nps.is_some_and(|n| n <= 6) {
        reasons.push("DETRACTOR");
    }
    if signal
        .oldest_open_complaint_days
        .is_some_and(|d| d >= settings.open_complaint_days)
    {
        reasons.push("OPEN_COMPLAINT");
    }
    if s.prior_180_nanos > 0 && s.recent_180_nanos * 2 < s.prior_180_nanos {
        reasons.push("FALLING_SPEND");
    }
    if s.x == 0 && silence > p90_gap {
        reasons.push("NO_REPEAT_PURCHASE");
    }
    // The churn probability comes from purchase timing alone. An elevated
    // risk that no timing reason above explains comes from the base rate:
    // few one-time buyers ever return (the rule's q), or under BG/NBD many
    // customers stop after a purchase. Say so, so no MEDIUM or HIGH risk
    // goes unexplained.
    if risk != ChurnRisk::Low && !reasons.iter().any(|r| TIMING_REASONS.contains(r)) {
        reasons.push("LOW_RETURN_RATE");
    }

    let cost = s.total_cost_nanos + serve_cost(signal, settings);
    let loyalty = loyalty_index(s.x, s.t, Some(recency), signal);

    let r = baseline.recency.score(recency);
    let f = baseline.frequency.score(s.transactions);
    let m = baseline.monetary.score(s.total_nanos);
    CustomerScores {
        customer: s.customer,
        recency_days: recency,
        frequency: s.transactions,
        monetary_nanos: s.total_nanos,
        r_score: r,
        f_score: f,
        m_score: m,
        segment: Segment::from_scores(r, f),
        weighted_score: settings.rfm_weights.weighted(r, f, m),
        historical_value: historical,
        simple_clv,
        p_alive,
        expected_purchases_365d: expected,
        expected_occasion_value: occasion_value,
        predicted_clv_365d: predicted_clv,
        churn_probability: churn,
        churn_risk: risk,
        churn_reasons: reasons,
        value_tier: None,
        value_quadrant: None,
        lifecycle: lifecycle(s, recency, risk, r, f, settings),
        loyalty_index: loyalty,
        revenue_nanos: s.total_nanos,
        cost_nanos: cost,
        margin_nanos: s.total_nanos - cost,
    }
}

/// Cost to serve: interactions and complaints at their unit costs, in nanos.
fn serve_cost(signal: &CustomerSignals, settings: &ModelSettings) -> i128 {
    i128::from(signal.interactions) * i128::from(settings.interaction_cost_nanos)
        + i128::from(signal.complaints) * i128::from(settings.complaint_cost_nanos)
}

/// Loyalty in 0..1: repeat behaviour 35%, tenure 20%, recency 25%,
/// satisfaction 20% (latest NPS / 10; 0.5 when unknown). `recency_days` is
/// None without a purchase.
fn loyalty_index(x: u32, t: f64, recency_days: Option<i64>, signal: &CustomerSignals) -> f64 {
    let repeat = 1.0 - (-f64::from(x) / 3.0).exp();
    let tenure = (t / 730.0).min(1.0);
    let recent = recency_days.map_or(0.0, |r| (-(r as f64) / 90.0).exp());
    let satisfaction = signal
        .latest_nps
        .map_or(0.5, |n| f64::from(n.min(10)) / 10.0);
    (0.35 * repeat + 0.2 * tenure + 0.25 * recent + 0.2 * satisfaction).clamp(0.0, 1.0)
}

/// What is scored for a prospect: a known customer without a purchase up
/// to the scoring date. Nothing about purchases applies (no RFM figures or
/// ranks, value, churn, tier or quadrant); what does is the lifecycle
/// stage (PROSPECT), loyalty (satisfaction is its only non-zero term) and
/// the cost to serve so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProspectScores {
    pub loyalty_index: f64,
    pub cost_nanos: i128,
}

pub fn score_prospect(signal: &CustomerSignals, settings: &ModelSettings) -> ProspectScores {
    ProspectScores {
        loyalty_index: loyalty_index(0, 0.0, None, signal),
        cost_nanos: serve_cost(signal, settings),
    }
}

/// PROSPECT (no purchase; scored by [`score_prospect`]), CHURNED (silent past
/// the limit), NEW (one occasion), AT_RISK (HIGH churn risk), LOYAL (repeat
/// buyer with r and f scores of 4 or 5), else ACTIVE.
fn lifecycle(
    s: &CustomerSummary,
    recency: i64,
    risk: ChurnRisk,
    r: u8,
    f: u8,
    settings: &ModelSettings,
) -> LifecycleStage {
    if s.transactions == 0 {
        LifecycleStage::Prospect
    } else if recency > settings.churned_after_days {
        LifecycleStage::Churned
    } else if s.x == 0 {
        LifecycleStage::New
    } else if risk == ChurnRisk::High {
        LifecycleStage::AtRisk
    } else if r >= 4 && f >= 4 {
        LifecycleStage::Loyal
    } else {
        LifecycleStage::Active
    }
}

/// Current value: margin over the trailing 365 days, in units.
fn current_value(s: &CustomerSummary) -> f64 {
    (s.trailing_365_nanos - s.trailing_365_cost_nanos) as f64 / NANOS
}

/// Tiers: HIGH when fewer than `tier_high_share` of customers have a larger
/// predicted CLV, MEDIUM within the next `tier_medium_share` (ties share a
/// tier). Quadrants: current value (margin over the trailing 365 days)
/// against potential value (predicted CLV), each high when above its median.
/// Both become cuts in the baseline, so one customer can be placed alone.
fn place_population(
    baseline: &mut Baseline,
    scores: &[CustomerScores],
    summaries: &[CustomerSummary],
    settings: &ModelSettings,
) {
    let n = scores.len();
    if n == 0 {
        return;
    }
    let mut clv: Vec<f64> = scores.iter().map(|s| s.predicted_clv_365d).collect();
    clv.par_sort_unstable_by(f64::total_cmp);
    let mut current: Vec<f64> = summaries.iter().map(current_value).collect();
    current.par_sort_unstable_by(f64::total_cmp);
    let median = |v: &[f64]| {
        if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        }
    };
    // A tier holding the customers of whom fewer than `share` x n have a
    // larger CLV starts at the j-th largest value, where j is the least
    // count with j / n >= share (computed as the division is, so the cut
    // agrees with the definition to the last bit).
    let from = |share: f64| -> Option<f64> {
        let mut j = ((share * n as f64).ceil().max(0.0) as usize).min(n + 1);
        while j > 0 && (j - 1) as f64 / n as f64 >= share {
            j -= 1;
        }
        while j <= n && (j as f64 / n as f64) < share {
            j += 1;
        }
        match j {
            0 => None,
            j if j > n => Some(f64::MIN),
            j => Some(clv[n - j]),
        }
    };
    // "count(larger) < j" holds exactly for values >= the j-th largest.
    baseline.tier_high_from = from(settings.tier_high_share);
    baseline.tier_medium_from = from(settings.tier_high_share + settings.tier_medium_share);
    baseline.clv_median = median(&clv);
    baseline.current_median = median(&current);
}

fn place(score: &mut CustomerScores, s: &CustomerSummary, baseline: &Baseline) {
    let clv = score.predicted_clv_365d;
    let at_least = |cut: Option<f64>| cut.is_some_and(|c| clv >= c);
    score.value_tier = Some(if at_least(baseline.tier_high_from) {
        ValueTier::High
    } else if at_least(baseline.tier_medium_from) {
        ValueTier::Medium
    } else {
        ValueTier::Low
    });
    let high_potential = clv > baseline.clv_median;
    let high_current = current_value(s) > baseline.current_median;
    score.value_quadrant = Some(match (high_current, high_potential) {
        (true, true) => ValueQuadrant::Star,
        (false, true) => ValueQuadrant::Grow,
        (true, false) => ValueQuadrant::Maintain,
        (false, false) => ValueQuadrant::Minimal,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discount_factor() {
        assert!((monthly_discount_factor(0.0) - 1.0).abs() < 1e-12);
        let f = monthly_discount_factor(0.01);
        assert!(f < 1.0 && f > 0.93, "{f}");
    }

    #[test]
    fn one_time_buyer_churn_grows_with_silence() {
        let rule = OneTimeBuyerRule::from_gaps(0.5, vec![40.0, 10.0, 30.0, 20.0]);
        let short = rule.churn_probability(5.0);
        let long = rule.churn_probability(100.0);
        assert!(
            (short - 0.5).abs() < 1e-12,
            "before any repeat would be due: 1 - q"
        );
        assert!(
            (long - 1.0).abs() < 1e-12,
            "after every repeat buyer had returned"
        );
        assert!(rule.churn_probability(25.0) > short);
        // Repeat buyers (scoring without a model): their own record moves
        // q towards 1, and the same silence means less.
        assert_eq!(
            rule.churn_probability_after(0, 25.0),
            rule.churn_probability(25.0)
        );
        assert!((rule.churn_probability_after(1, 5.0) - 0.25).abs() < 1e-12);
        assert!((rule.churn_probability_after(3, 5.0) - 0.125).abs() < 1e-12);
        assert!(rule.churn_probability_after(1, 25.0) < rule.churn_probability(25.0));
        assert!((rule.churn_probability_after(1, 100.0) - 1.0).abs() < 1e-12);
    }
}
