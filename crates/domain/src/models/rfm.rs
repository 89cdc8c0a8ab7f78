//! RFM scores and segments (models.md).
//!
//! With n scored customers: f_score = 1 + floor(5 × #(smaller frequency) / n),
//! m_score likewise on monetary, r_score = 1 + floor(5 × #(larger
//! recency_days) / n): ties share a score, each in 1..=5, O(n log n).

/// Rank-based 1..=5 scores: `1 + floor(5 × #(values strictly below v) / n)`.
pub fn scores_by_smaller<T: PartialOrd + Copy + Send + Sync>(values: &[T]) -> Vec<u8> {
    rank_scores(values, false)
}

/// Rank-based 1..=5 scores: `1 + floor(5 × #(values strictly above v) / n)`.
pub fn scores_by_larger<T: PartialOrd + Copy + Send + Sync>(values: &[T]) -> Vec<u8> {
    rank_scores(values, true)
}

/// One parallel sort of (value, position), then one pass over runs of equal
/// values: a run starting at sorted position i has i smaller values and
/// n - (end of run) larger ones.
fn rank_scores<T: PartialOrd + Copy + Send + Sync>(values: &[T], by_larger: bool) -> Vec<u8> {
    use rayon::prelude::*;
    let n = values.len();
    let mut sorted: Vec<(T, u32)> = values.iter().copied().zip(0u32..).collect();
    sorted.par_sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let mut out = vec![0u8; n];
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n
            && sorted[end].0.partial_cmp(&sorted[start].0) == Some(std::cmp::Ordering::Equal)
        {
            end += 1;
        }
        let s = score(if by_larger { n - end } else { start }, n);
        for &(_, i) in &sorted[start..end] {
            out[i as usize] = s;
        }
        start = end;
    }
    out
}

fn score(count: usize, n: usize) -> u8 {
    (1 + (5 * count) / n.max(1)).min(5) as u8
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
            for (v, s) in values.iter().zip(after) { prop_assert_eq!(before[v], s); }

            let recency = scores_by_larger(&values);
            for i in 0..values.len() {
                for j in 0..values.len() {
                    if values[i] < values[j] { prop_assert!(recency[i] >= recency[j]); }
                }
            }
        }
    }
}
