//! Per-customer purchase summaries, following the data convention of
//! `models.md`: a purchase occasion is a UTC calendar day with at least one
//! transaction (several on one day are one occasion whose value is their
//! sum); x = occasions after the first; t_x = days from the first occasion
//! to the last; T = days from the first occasion to `as_of`. Purchases after
//! `as_of` are ignored; customers whose first purchase is after it are out.

use rayon::prelude::*;

use super::bgnbd::BgNbdRow;

/// One transaction as the models see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purchase {
    /// Dense customer index, 0..customers.
    pub customer: u32,
    /// Days since 1970-01-01 (UTC).
    pub day: i32,
    pub amount_nanos: i64,
    /// Cost of goods; 0 when unknown.
    pub cost_nanos: i64,
}

/// What the models need to know about one customer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CustomerSummary {
    pub customer: u32,
    /// Transactions up to `as_of` (RFM frequency).
    pub transactions: u32,
    /// Total amount up to `as_of` (RFM monetary, historical value), exact.
    pub total_nanos: i128,
    pub total_cost_nanos: i128,
    pub first_day: i32,
    pub last_day: i32,
    /// Repeat purchase occasions.
    pub x: u32,
    /// Days from the first to the last occasion.
    pub t_x: f64,
    /// Days from the first occasion to `as_of`.
    pub t: f64,
    /// Mean value of the repeat occasions, in units (0 when x = 0).
    pub repeat_mean_value: f64,
    /// Days between the first and second occasion (for the one-time-buyer rule).
    pub first_gap: Option<f64>,
    /// Revenue and cost in the 365 days up to `as_of` (current value).
    pub trailing_365_nanos: i128,
    pub trailing_365_cost_nanos: i128,
    /// Revenue in the last 180 days and the 180 before (spend trend).
    pub recent_180_nanos: i128,
    pub prior_180_nanos: i128,
}

impl CustomerSummary {
    /// The customer's history as BG/NBD sees it (x, t_x, T), weight 1.
    pub fn bg_nbd_row(&self) -> BgNbdRow {
        BgNbdRow {
            x: self.x,
            t_x: self.t_x,
            t: self.t,
            weight: 1.0,
        }
    }

    /// Days from the last purchase day to `as_of`.
    pub fn recency_days(&self, as_of_day: i32) -> i64 {
        i64::from(as_of_day - self.last_day)
    }
}

const NANOS: f64 = 1e9;

/// Summaries of every customer with a purchase on or before `as_of_day`,
/// ordered by customer index. Runs in O(n) (bucketing by customer, then a
/// small sort per customer), without copying the purchases beyond one
/// scratch bucket, and on every rayon thread.
pub fn summarize(customers: usize, purchases: &[Purchase], as_of_day: i32) -> Vec<CustomerSummary> {
    // Counting sort by customer into one contiguous scratch array, so each
    // customer's history is read sequentially. The customers are split into
    // one contiguous range per thread: every thread scans all purchases but
    // counts and places only its own customers, so each writes a disjoint
    // part of the counts and of the scratch array (no locks, no unsafe).
    let threads = rayon::current_num_threads().max(1);
    let range_len = customers.div_ceil(threads).max(1);
    let kept = |p: &Purchase| p.day <= as_of_day && (p.customer as usize) < customers;

    let mut starts = vec![0u32; customers + 1];
    starts[1..]
        .par_chunks_mut(range_len)
        .enumerate()
        .for_each(|(k, counts)| {
            let lo = k * range_len;
            for p in purchases.iter().filter(|p| kept(p)) {
                if let Some(n) = counts.get_mut((p.customer as usize).wrapping_sub(lo)) {
                    *n += 1;
                }
            }
        });
    for i in 0..customers {
        starts[i + 1] += starts[i];
    }

    let mut bucketed: Vec<Entry> = vec![[0; 3]; starts[customers] as usize];
    let mut regions: Vec<(usize, &mut [Entry])> = Vec::with_capacity(threads);
    let mut rest: &mut [Entry] = &mut bucketed;
    for lo in (0..customers).step_by(range_len) {
        let hi = (lo + range_len).min(customers);
        let (head, tail) = rest.split_at_mut((starts[hi] - starts[lo]) as usize);
        regions.push((lo, head));
        rest = tail;
    }
    regions.into_par_iter().for_each(|(lo, region)| {
        let hi = (lo + range_len).min(customers);
        let base = starts[lo];
        // Cursors relative to the region, one per customer of the range.
        let mut next: Vec<u32> = starts[lo..hi].iter().map(|s| s - base).collect();
        for p in purchases.iter().filter(|p| kept(p)) {
            if let Some(slot) = next.get_mut((p.customer as usize).wrapping_sub(lo)) {
                region[*slot as usize] = [i64::from(p.day), p.amount_nanos, p.cost_nanos];
                *slot += 1;
            }
        }
        for c in lo..hi {
            let history = &mut region[(starts[c] - base) as usize..(starts[c + 1] - base) as usize];
            history.sort_unstable_by_key(|&[day, ..]| day);
        }
    });

    let buyers: Vec<u32> = (0..customers as u32)
        .filter(|&c| starts[c as usize + 1] > starts[c as usize])
        .collect();
    buyers
        .par_iter()
        .map(|&c| {
            let history = &bucketed[starts[c as usize] as usize..starts[c as usize + 1] as usize];
            summarize_one(c, history, as_of_day)
        })
        .collect()
}

/// A purchase inside its customer's bucket: `[day, amount_nanos, cost_nanos]`.
/// An array of integers rather than a struct so that `vec![[0; 3]; n]`
/// takes zeroed pages from the allocator instead of first writing n
/// default values (240 MB for 10M purchases, ~75 ms).
type Entry = [i64; 3];

fn summarize_one(customer: u32, entries: &[Entry], as_of_day: i32) -> CustomerSummary {
    // Days were stored widened from i32, so narrowing them back is exact.
    let first_day = entries[0][0] as i32;
    let mut s = CustomerSummary {
        customer,
        first_day,
        last_day: first_day,
        ..Default::default()
    };
    let mut occasion_day = first_day;
    let mut occasions = 0u32;
    let mut repeat_total: i128 = 0;
    for &[day, amount_nanos, cost_nanos] in entries {
        let day = day as i32;
        s.transactions += 1;
        s.total_nanos += i128::from(amount_nanos);
        s.total_cost_nanos += i128::from(cost_nanos);
        let age = as_of_day - day;
        if age < 365 {
            s.trailing_365_nanos += i128::from(amount_nanos);
            s.trailing_365_cost_nanos += i128::from(cost_nanos);
        }
        if age < 180 {
            s.recent_180_nanos += i128::from(amount_nanos);
        } else if age < 360 {
            s.prior_180_nanos += i128::from(amount_nanos);
        }
        if occasions == 0 || day != occasion_day {
            occasions += 1;
            if occasions == 2 {
                s.first_gap = Some(f64::from(day - first_day));
            }
            occasion_day = day;
        }
        if occasions > 1 {
            repeat_total += i128::from(amount_nanos);
        }
        s.last_day = day;
    }
    s.x = occasions - 1;
    s.t_x = f64::from(s.last_day - first_day);
    s.t = f64::from(as_of_day - first_day);
    s.repeat_mean_value = if s.x > 0 {
        repeat_total as f64 / NANOS / f64::from(s.x)
    } else {
        0.0
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(customer: u32, day: i32, units: i64) -> Purchase {
        Purchase {
            customer,
            day,
            amount_nanos: units * 1_000_000_000,
            cost_nanos: 0,
        }
    }

    #[test]
    fn follows_the_data_convention() {
        let purchases = [
            p(0, 10, 5),
            p(0, 10, 7), // same day: one occasion worth 12
            p(0, 15, 20),
            p(0, 30, 10),
            p(0, 50, 99), // after as_of: ignored
            p(1, 20, 3),
            p(2, 45, 1), // first purchase after as_of: out
        ];
        let s = summarize(3, &purchases, 40);
        assert_eq!(s.len(), 2);
        let c0 = s[0];
        assert_eq!((c0.transactions, c0.x, c0.t_x, c0.t), (4, 2, 20.0, 30.0));
        assert_eq!(c0.total_nanos, 42_000_000_000);
        assert_eq!(
            c0.repeat_mean_value, 15.0,
            "repeat occasions 20 and 10; the first is excluded"
        );
        assert_eq!(c0.first_gap, Some(5.0));
        assert_eq!(c0.recency_days(40), 10);
        let c1 = s[1];
        assert_eq!(
            (c1.x, c1.t_x, c1.t, c1.repeat_mean_value),
            (0, 0.0, 20.0, 0.0)
        );
    }
}
