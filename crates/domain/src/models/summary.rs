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
    let mut history = History::new(customer, as_of_day);
    for &[day, amount_nanos, cost_nanos] in entries {
        // Days were stored widened from i32, so narrowing them back is exact.
        history.add(day as i32, amount_nanos, cost_nanos, 1);
    }
    history.summary()
}

/// One customer's purchases on one UTC day, summed: the form a customer's
/// history is stored in (see [`summarize_days`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayTotals {
    /// Days since 1970-01-01 (UTC).
    pub day: i32,
    pub amount_nanos: i64,
    pub cost_nanos: i64,
    /// Transactions that day (RFM frequency counts each).
    pub transactions: u32,
}

/// One customer's summary from its purchases summed per day, `days` in day
/// order, each day once; the days after `as_of_day` are ignored. Equal to
/// [`summarize`] of the same transactions (a property test checks it), without
/// a purchase per transaction: a recompute summarizes each customer as its
/// stored history is read. `None` without a purchase up to `as_of_day`.
pub fn summarize_days(
    customer: u32,
    days: impl IntoIterator<Item = DayTotals>,
    as_of_day: i32,
) -> Option<CustomerSummary> {
    let mut history = History::new(customer, as_of_day);
    for d in days.into_iter().take_while(|d| d.day <= as_of_day) {
        history.add(d.day, d.amount_nanos, d.cost_nanos, d.transactions);
    }
    (history.summary.transactions > 0).then(|| history.summary())
}

/// A customer's summary as its purchases are added in day order: the one
/// place the data convention is applied.
struct History {
    summary: CustomerSummary,
    as_of_day: i32,
    occasion_day: i32,
    occasions: u32,
    repeat_total: i128,
}

impl History {
    fn new(customer: u32, as_of_day: i32) -> Self {
        Self {
            summary: CustomerSummary {
                customer,
                ..Default::default()
            },
            as_of_day,
            occasion_day: 0,
            occasions: 0,
            repeat_total: 0,
        }
    }

    /// Adds `transactions` purchases on `day` (not before the last one
    /// added) worth `amount_nanos` and costing `cost_nanos` in all.
    fn add(&mut self, day: i32, amount_nanos: i64, cost_nanos: i64, transactions: u32) {
        let s = &mut self.summary;
        if self.occasions == 0 {
            s.first_day = day;
        }
        s.transactions += transactions;
        s.total_nanos += i128::from(amount_nanos);
        s.total_cost_nanos += i128::from(cost_nanos);
        let age = self.as_of_day - day;
        if age < 365 {
            s.trailing_365_nanos += i128::from(amount_nanos);
            s.trailing_365_cost_nanos += i128::from(cost_nanos);
        }
        if age < 180 {
            s.recent_180_nanos += i128::from(amount_nanos);
        } else if age < 360 {
            s.prior_180_nanos += i128::from(amount_nanos);
        }
        if self.occasions == 0 || day != self.occasion_day {
            self.occasions += 1;
            if self.occasions == 2 {
                s.first_gap = Some(f64::from(day - s.first_day));
            }
            self.occasion_day = day;
        }
        if self.occasions > 1 {
            self.repeat_total += i128::from(amount_nanos);
        }
        s.last_day = day;
    }

    /// The summary of what was added (at least one purchase).
    fn summary(self) -> CustomerSummary {
        let mut s = self.summary;
        s.x = self.occasions - 1;
        s.t_x = f64::from(s.last_day - s.first_day);
        s.t = f64::from(self.as_of_day - s.first_day);
        s.repeat_mean_value = if s.x > 0 {
            self.repeat_total as f64 / NANOS / f64::from(s.x)
        } else {
            0.0
        };
        s
    }
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

    proptest::proptest! {
        /// Summing each day first, as the stored histories do, gives the
        /// summary of the transactions themselves.
        #[test]
        fn a_summary_of_day_totals_equals_the_summary_of_the_transactions(
            transactions in proptest::collection::vec((0i32..60, -5i64..100, 0i64..50), 0..40),
            as_of_day in 0i32..70,
        ) {
            let purchases: Vec<Purchase> = transactions
                .iter()
                .map(|&(day, units, cost)| Purchase {
                    customer: 0,
                    day,
                    amount_nanos: units * 1_000_000_000,
                    cost_nanos: cost * 1_000_000,
                })
                .collect();
            let mut days: std::collections::BTreeMap<i32, DayTotals> = Default::default();
            for p in &purchases {
                let d = days.entry(p.day).or_insert(DayTotals { day: p.day, ..Default::default() });
                d.amount_nanos += p.amount_nanos;
                d.cost_nanos += p.cost_nanos;
                d.transactions += 1;
            }
            let expected = summarize(1, &purchases, as_of_day).first().copied();
            proptest::prop_assert_eq!(summarize_days(0, days.into_values(), as_of_day), expected);
        }
    }
}
