//! Everything scored per customer, from summaries and a fitted model, for a
//! whole population at once (in parallel, without copying the summaries).
//! All thresholds live in [`ModelSettings`]; the formulas are documented
//! where they are computed and in `docs/models.md`.

use rayon::prelude::*;

use super::{
    bgnbd::{BgNbdParams, BgNbdRow},
    gamma_gamma::GammaGammaParams,
    rfm::{RfmWeights, Segment, scores_by_larger, scores_by_smaller},
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FittedModel {
    pub bg_nbd: BgNbdParams,
    pub gamma_gamma: GammaGammaParams,
}

/// Population facts the one-time-buyer churn rule uses.
#[derive(Debug, Clone, PartialEq)]
pub struct OneTimeBuyerRule {
    /// Share of (long enough observed) customers who ever made a repeat purchase.
    pub repeat_share: f64,
    /// Sorted days from first to second purchase among repeat buyers.
    pub first_gaps: Vec<f64>,
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
        let repeat_share = if base.is_empty() {
            0.0
        } else {
            base.iter().filter(|s| s.x > 0).count() as f64 / base.len() as f64
        };
        let mut first_gaps: Vec<f64> = summaries.iter().filter_map(|s| s.first_gap).collect();
        first_gaps.sort_unstable_by(f64::total_cmp);
        Self {
            repeat_share,
            first_gaps,
        }
    }

    /// Churn probability of a one-time buyer silent for `silence` days.
    ///
    /// BG/NBD says such a customer is alive with probability 1, which is no
    /// use. Instead: a share q of customers ever buy again, and F(s) of those
    /// who do have done so within s days of their first purchase. Having
    /// seen no repeat in s days, Bayes gives P(will still return) =
    /// q(1 - F(s)) / (q(1 - F(s)) + 1 - q); churn is one minus that.
    pub fn churn_probability(&self, silence: f64) -> f64 {
        if self.first_gaps.is_empty() {
            return 1.0 - self.repeat_share;
        }
        let within = self.first_gaps.partition_point(|g| *g <= silence) as f64
            / self.first_gaps.len() as f64;
        let q = self.repeat_share;
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
        if self.first_gaps.is_empty() {
            return f64::INFINITY;
        }
        self.first_gaps[((self.first_gaps.len() - 1) as f64 * 0.9) as usize]
    }
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
    pub value_tier: ValueTier,
    pub value_quadrant: ValueQuadrant,
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
pub fn score_population(
    summaries: &[CustomerSummary],
    signals: Option<&[CustomerSignals]>,
    model: &FittedModel,
    settings: &ModelSettings,
    as_of_day: i32,
) -> Vec<CustomerScores> {
    let recency: Vec<i64> = summaries
        .iter()
        .map(|s| s.recency_days(as_of_day))
        .collect();
    let frequency: Vec<u32> = summaries.iter().map(|s| s.transactions).collect();
    let monetary: Vec<i128> = summaries.iter().map(|s| s.total_nanos).collect();
    let (r_scores, (f_scores, m_scores)) = rayon::join(
        || scores_by_larger(&recency),
        || {
            rayon::join(
                || scores_by_smaller(&frequency),
                || scores_by_smaller(&monetary),
            )
        },
    );
    let rule = OneTimeBuyerRule::from_population(summaries, settings);
    let lifespan = settings.expected_lifespan_years.unwrap_or_else(|| {
        observed_annual_churn(summaries, as_of_day)
            .filter(|c| *c > 0.01)
            .map_or(10.0, |c| 1.0 / c)
    });
    let discount = monthly_discount_factor(settings.monthly_discount_rate);
    let p90_gap = rule.p90_gap();
    let histories: Vec<BgNbdRow> = summaries
        .iter()
        .map(|s| BgNbdRow {
            x: s.x,
            t_x: s.t_x,
            t: s.t,
            weight: 1.0,
        })
        .collect();
    let expected_365 = model
        .bg_nbd
        .conditional_expected_purchases_many(365.0, &histories);

    let mut scores: Vec<CustomerScores> = summaries
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let signal = signals.and_then(|v| v.get(i)).copied().unwrap_or_default();
            let bg = &model.bg_nbd;
            let silence = s.t - s.t_x;
            let p_alive = bg.p_alive(s.x, s.t_x, s.t);
            let expected = expected_365[i].unwrap_or(0.0);
            let occasion_value = model
                .gamma_gamma
                .conditional_expected_value(s.x, s.repeat_mean_value);
            let predicted_clv = expected * occasion_value * settings.margin_rate * discount;
            let historical = s.total_nanos as f64 / NANOS;
            let tenure_years = ((s.t + 1.0) / 365.25).max(1.0 / 12.0);
            let aov = historical / f64::from(s.transactions.max(1));
            let simple_clv = aov * (f64::from(s.transactions) / tenure_years) * lifespan;

            let churn = if s.x > 0 {
                1.0 - p_alive
            } else {
                rule.churn_probability(silence)
            };
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

            let serve_cost = i128::from(signal.interactions)
                * i128::from(settings.interaction_cost_nanos)
                + i128::from(signal.complaints) * i128::from(settings.complaint_cost_nanos);
            let cost = s.total_cost_nanos + serve_cost;

            // Loyalty in 0..1: repeat behaviour 35%, tenure 20%, recency 25%,
            // satisfaction 20% (latest NPS / 10; 0.5 when unknown).
            let repeat = 1.0 - (-f64::from(s.x) / 3.0).exp();
            let tenure = (s.t / 730.0).min(1.0);
            let recent = (-(recency[i] as f64) / 90.0).exp();
            let satisfaction = signal
                .latest_nps
                .map_or(0.5, |n| f64::from(n.min(10)) / 10.0);
            let loyalty = 0.35 * repeat + 0.2 * tenure + 0.25 * recent + 0.2 * satisfaction;

            let (r, f, m) = (r_scores[i], f_scores[i], m_scores[i]);
            CustomerScores {
                customer: s.customer,
                recency_days: recency[i],
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
                value_tier: ValueTier::Low,
                value_quadrant: ValueQuadrant::Minimal,
                lifecycle: lifecycle(s, recency[i], risk, r, f, settings),
                loyalty_index: loyalty.clamp(0.0, 1.0),
                revenue_nanos: s.total_nanos,
                cost_nanos: cost,
                margin_nanos: s.total_nanos - cost,
            }
        })
        .collect();
    assign_tiers_and_quadrants(&mut scores, summaries, settings);
    scores
}

/// PROSPECT (no purchase; not in a purchase summary), CHURNED (silent past
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

/// Tiers: HIGH when fewer than `tier_high_share` of customers have a larger
/// predicted CLV, MEDIUM within the next `tier_medium_share` (ties share a
/// tier). Quadrants: current value (margin over the trailing 365 days)
/// against potential value (predicted CLV), each high when above its median.
fn assign_tiers_and_quadrants(
    scores: &mut [CustomerScores],
    summaries: &[CustomerSummary],
    settings: &ModelSettings,
) {
    let n = scores.len();
    if n == 0 {
        return;
    }
    let mut clv: Vec<f64> = scores.iter().map(|s| s.predicted_clv_365d).collect();
    clv.sort_unstable_by(f64::total_cmp);
    let current: Vec<f64> = summaries
        .iter()
        .map(|s| (s.trailing_365_nanos - s.trailing_365_cost_nanos) as f64 / NANOS)
        .collect();
    let mut current_sorted = current.clone();
    current_sorted.sort_unstable_by(f64::total_cmp);
    let median = |v: &[f64]| {
        if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        }
    };
    let (clv_median, current_median) = (median(&clv), median(&current_sorted));
    for (i, s) in scores.iter_mut().enumerate() {
        let larger = n - clv.partition_point(|v| *v <= s.predicted_clv_365d);
        let share = larger as f64 / n as f64;
        s.value_tier = if share < settings.tier_high_share {
            ValueTier::High
        } else if share < settings.tier_high_share + settings.tier_medium_share {
            ValueTier::Medium
        } else {
            ValueTier::Low
        };
        let high_potential = s.predicted_clv_365d > clv_median;
        let high_current = current[i] > current_median;
        s.value_quadrant = match (high_current, high_potential) {
            (true, true) => ValueQuadrant::Star,
            (false, true) => ValueQuadrant::Grow,
            (true, false) => ValueQuadrant::Maintain,
            (false, false) => ValueQuadrant::Minimal,
        };
    }
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
        let rule = OneTimeBuyerRule {
            repeat_share: 0.5,
            first_gaps: vec![10.0, 20.0, 30.0, 40.0],
        };
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
    }
}
