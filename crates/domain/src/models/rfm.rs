//! RFM scores and segments (models.md).
//!
//! With n scored customers: f_score = 1 + floor(5 × #(smaller frequency) / n),
//! m_score likewise on monetary, r_score = 1 + floor(5 × #(larger
//! recency_days) / n): ties share a score, each in 1..=5, O(n log n).

use serde::{Deserialize, Serialize};

/// Rank-based 1..=5 scores: `1 + floor(5 × #(values strictly below v) / n)`.
pub fn scores_by_smaller<T: PartialOrd + Copy + Send + Sync>(values: &[T]) -> Vec<u8> {
    RankCuts::of(values, false).score_all(values)
}

/// Rank-based 1..=5 scores: `1 + floor(5 × #(values strictly above v) / n)`.
pub fn scores_by_larger<T: PartialOrd + Copy + Send + Sync>(values: &[T]) -> Vec<u8> {
    RankCuts::of(values, true).score_all(values)
}

/// The boundaries of rank-based scores over one population.
///
/// A score is `1 + floor(5c / n)` where c counts the values strictly below
/// (or above) v, so the score reaches k exactly when c ≥ m_k = ⌈(k−1)n/5⌉,
/// that is when v passes the m_k-th smallest (largest) value. Four cuts
/// (k = 2..=5) hold the whole ranking: scoring the population by its own
/// cuts gives exactly its rank scores, in O(n) (four selections instead of
/// a sort); scoring a new value places it among the population as it was,
/// which is what online scoring does between recomputes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankCuts<T> {
    /// Larger values score lower (recency) instead of higher.
    pub by_larger: bool,
    /// The value each score from 2 to 5 must pass (fewer with no population).
    pub cuts: Vec<T>,
}

impl<T: PartialOrd + Copy + Send + Sync> RankCuts<T> {
    pub fn of(values: &[T], by_larger: bool) -> Self {
        let n = values.len();
        if n == 0 {
            return Self {
                by_larger,
                cuts: Vec::new(),
            };
        }
        let order = |a: &T, b: &T| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
        // Ascending positions of the cuts: m_k - 1 from below, n - m_k from above.
        let positions: Vec<usize> = (2..=5)
            .map(|k| {
                let m = ((k - 1) * n).div_ceil(5);
                if by_larger { n - m } else { m - 1 }
            })
            .collect();
        let mut sorted_at: Vec<usize> = positions.clone();
        sorted_at.sort_unstable();
        let mut scratch = values.to_vec();
        let mut from = 0;
        for &p in &sorted_at {
            if p >= from {
                scratch[from..].select_nth_unstable_by(p - from, order);
                from = p + 1;
            }
        }
        Self {
            by_larger,
            cuts: positions.iter().map(|&p| scratch[p]).collect(),
        }
    }

    /// The score of `v` against the population the cuts came from.
    pub fn score(&self, v: T) -> u8 {
        let passed = self
            .cuts
            .iter()
            .filter(|c| if self.by_larger { v < **c } else { v > **c })
            .count();
        1 + passed as u8
    }

    fn score_all(&self, values: &[T]) -> Vec<u8> {
        use rayon::prelude::*;
        values.par_iter().map(|v| self.score(*v)).collect()
    }
}

/// The ten RFM segments of the (r_score, f_score) grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segment {
    Champions,
    LoyalCustomers,
    PotentialLoyalists,
    NewCustomers,
    Promising,
    NeedAttention,
    AboutToSleep,
    AtRisk,
    CantLoseThem,
    Hibernating,
}

impl Segment {
    pub const ALL: [Segment; 10] = [
        Segment::Champions,
        Segment::LoyalCustomers,
        Segment::PotentialLoyalists,
        Segment::NewCustomers,
        Segment::Promising,
        Segment::NeedAttention,
        Segment::AboutToSleep,
        Segment::AtRisk,
        Segment::CantLoseThem,
        Segment::Hibernating,
    ];

    pub fn from_scores(r: u8, f: u8) -> Segment {
        match r {
            5 => match f {
                0..=1 => Segment::NewCustomers,
                2..=3 => Segment::PotentialLoyalists,
                _ => Segment::Champions,
            },
            4 => match f {
                0..=1 => Segment::Promising,
                2..=3 => Segment::PotentialLoyalists,
                _ => Segment::LoyalCustomers,
            },
            3 => match f {
                0..=2 => Segment::AboutToSleep,
                3 => Segment::NeedAttention,
                _ => Segment::LoyalCustomers,
            },
            _ => match f {
                0..=2 => Segment::Hibernating,
                3..=4 => Segment::AtRisk,
                _ => Segment::CantLoseThem,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Segment::Champions => "champions",
            Segment::LoyalCustomers => "loyal_customers",
            Segment::PotentialLoyalists => "potential_loyalists",
            Segment::NewCustomers => "new_customers",
            Segment::Promising => "promising",
            Segment::NeedAttention => "need_attention",
            Segment::AboutToSleep => "about_to_sleep",
            Segment::AtRisk => "at_risk",
            Segment::CantLoseThem => "cant_lose_them",
            Segment::Hibernating => "hibernating",
        }
    }
}

/// Weights of the weighted ("improved") RFM score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RfmWeights {
    pub r: f64,
    pub f: f64,
    pub m: f64,
}

impl RfmWeights {
    /// The default, derived by the analytic hierarchy process from this
    /// pairwise comparison (Saaty's 1-9 scale): recency is moderately more
    /// important than frequency (2) and more than monetary (3); frequency is
    /// moderately more important than monetary (2). The weights are the
    /// principal eigenvector of the matrix, normalised to sum to 1:
    /// about r 0.540, f 0.297, m 0.163 (consistency ratio about 0.008).
    pub fn ahp_default() -> Self {
        let (w, _) = ahp_weights([[1.0, 2.0, 3.0], [0.5, 1.0, 2.0], [1.0 / 3.0, 0.5, 1.0]]);
        Self {
            r: w[0],
            f: w[1],
            m: w[2],
        }
    }

    pub fn weighted(&self, r: u8, f: u8, m: u8) -> f64 {
        self.r * f64::from(r) + self.f * f64::from(f) + self.m * f64::from(m)
    }
}

/// Principal eigenvector (power iteration) and consistency ratio of a 3x3
/// AHP pairwise comparison matrix.
pub fn ahp_weights(m: [[f64; 3]; 3]) -> ([f64; 3], f64) {
    let mut w = [1.0 / 3.0; 3];
    let mut lambda = 3.0;
    for _ in 0..100 {
        let mut next = [0.0; 3];
        for i in 0..3 {
            next[i] = (0..3).map(|j| m[i][j] * w[j]).sum();
        }
        let sum: f64 = next.iter().sum();
        lambda = sum / w.iter().sum::<f64>();
        for v in &mut next {
            *v /= sum;
        }
        w = next;
    }
    // Random index for n = 3 is 0.58.
    let consistency_ratio = ((lambda - 3.0) / 2.0) / 0.58;
    (w, consistency_ratio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ties_share_a_score() {
        let f = scores_by_smaller(&[1u32, 1, 1, 2, 3, 3, 10, 10, 10, 10]);
        assert_eq!(f, vec![1, 1, 1, 2, 3, 3, 4, 4, 4, 4]);
        let r = scores_by_larger(&[0i64, 5, 5, 100]);
        assert_eq!(r, vec![4, 2, 2, 1]);
    }

    #[test]
    fn the_grid_covers_every_cell() {
        assert_eq!(Segment::from_scores(5, 5), Segment::Champions);
        assert_eq!(Segment::from_scores(3, 4), Segment::LoyalCustomers);
        assert_eq!(Segment::from_scores(4, 2), Segment::PotentialLoyalists);
        assert_eq!(Segment::from_scores(5, 1), Segment::NewCustomers);
        assert_eq!(Segment::from_scores(4, 1), Segment::Promising);
        assert_eq!(Segment::from_scores(3, 3), Segment::NeedAttention);
        assert_eq!(Segment::from_scores(3, 2), Segment::AboutToSleep);
        assert_eq!(Segment::from_scores(2, 4), Segment::AtRisk);
        assert_eq!(Segment::from_scores(1, 5), Segment::CantLoseThem);
        assert_eq!(Segment::from_scores(1, 2), Segment::Hibernating);
    }

    #[test]
    fn ahp_default_weights() {
        let w = RfmWeights::ahp_default();
        assert!((w.r + w.f + w.m - 1.0).abs() < 1e-12);
        assert!(
            (w.r - 0.540).abs() < 0.001
                && (w.f - 0.297).abs() < 0.001
                && (w.m - 0.163).abs() < 0.001,
            "{w:?}"
        );
        let (_, cr) = ahp_weights([[1.0, 2.0, 3.0], [0.5, 1.0, 2.0], [1.0 / 3.0, 0.5, 1.0]]);
        assert!(cr < 0.1, "consistent: {cr}");
    }

    proptest! {
        #[test]
        fn scores_are_in_range_monotone_and_order_invariant(mut values in proptest::collection::vec(0u32..50, 1..200), seed in 0u64..1000) {
            let scores = scores_by_smaller(&values);
            prop_assert!(scores.iter().all(|s| (1..=5).contains(s)));
            for i in 0..values.len() {
                for j in 0..values.len() {
                    if values[i] < values[j] { prop_assert!(scores[i] <= scores[j]); }
                    if values[i] == values[j] { prop_assert_eq!(scores[i], scores[j]); }
                }
            }
            // Invariant to input order: each value keeps its score.
            let before: std::collections::HashMap<u32, u8> = values.iter().copied().zip(scores.iter().copied()).collect();
            let len = values.len();
            values.rotate_left((seed as usize) % len);
            let after = scores_by_smaller(&values);
            for (v, s) in values.iter().zip(after.iter().copied()) { prop_assert_eq!(before[v], s); }

            let recency = scores_by_larger(&values);
            // Against the definition, counted directly.
            let n = values.len();
            for (i, v) in values.iter().enumerate() {
                let below = values.iter().filter(|w| *w < v).count();
                let above = values.iter().filter(|w| *w > v).count();
                prop_assert_eq!(after[i] as usize, (1 + 5 * below / n).min(5));
                prop_assert_eq!(recency[i] as usize, (1 + 5 * above / n).min(5));
            }
            for i in 0..values.len() {
                for j in 0..values.len() {
                    if values[i] < values[j] { prop_assert!(recency[i] >= recency[j]); }
                }
            }
        }
    }
}
