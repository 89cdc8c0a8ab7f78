//! Per-customer purchase summaries, following the data convention of
//! `models.md`: a purchase occasion is a UTC calendar day with at least one
//! transaction (several on one day are one occasion whose value is their
//! sum); x = occasions after the first; t_x = days from the first occasion
//! to the last; T = days from the first occasion to `as_of`. Purchases after
//! `as_of` are ignored; customers whose first purchase is after it are out.

use rayon::prelude::*;

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
    /// Days from the last purchase day to `as_of`.
    pub fn recency_days(&self, as_of_day: i32) -> i64 {
        i64::from(as_of_day - self.last_day)
    }
}

const NANOS: f64 = 1e9;

/// Summaries of every customer with a purchase on or before `as_of_day`,
/// ordered by customer index. Runs in O(n) (bucketing by customer, then a
/// small sort per customer), without copying the purchases.
pub fn summarize(customers: usize, purchases: &[Purchase], as_of_day: i32) -> Vec<CustomerSummary> {
    // Bucket the purchases by customer (counting sort) into a contiguous
    // scratch array, so each customer's history is read sequentially.
    let mut starts = vec![0u32; customers + 1];
    for p in purchases {
        if p.day <= as_of_day && (p.customer as usize) < customers {
            starts[p.customer as usize + 1] += 1;
        }
    }
    for i in 0..customers {
        starts[i + 1] += starts[i];
    }
    let mut next = starts.clone();
    let mut bucketed = vec![Entry::default(); starts[customers] as usize];
    for p in purchases {
        if p.day <= as_of_day && (p.customer as usize) < customers {
            let slot = &mut next[p.customer as usize];
            bucketed[*slot as usize] = Entry {
                day: p.day,
                amount_nanos: p.amount_nanos,
                cost_nanos: p.cost_nanos,
            };
            *slot += 1;
        }
    }
    let mut slices: Vec<(usize, &mut [Entry])> = Vec::with_capacity(customers);
    let mut rest: &mut [Entry] = &mut bucketed;
    for c in 0..customers {
        let len = (starts[c + 1] - starts[c]) as usize;
        let (head, tail) = rest.split_at_mut(len);
        if len > 0 {
            slices.push((c, head));
        }
        rest = tail;
    }
    slices
        .into_par_iter()
        .map(|(c, entries)| {
            entries.sort_unstable_by_key(|e| e.day);
            summarize_one(c as u32, entries, as_of_day)
        })
        .collect()
}

/// A purchase inside its customer's bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    day: i32,
    amount_nanos: i64,
    cost_nanos: i64,
}

fn summarize_one(customer: u32, entries: &[Entry], as_of_day: i32) -> CustomerSummary {
    let first_day = entries[0].day;
    let mut s = CustomerSummary {
        customer,
        first_day,
        last_day: first_day,
        ..Default::default()
    };
    let mut occasion_day = first_day;
    let mut occasions = 0u32;
    let mut repeat_total: i128 = 0;
    for p in entries {
        s.transactions += 1;
        s.total_nanos += i128::from(p.amount_nanos);
        s.total_cost_nanos += i128::from(p.cost_nanos);
        let age = as_of_day - p.day;
        if age < 365 {
            s.trailing_365_nanos += i128::from(p.amount_nanos);
            s.trailing_365_cost_nanos += i128::from(p.cost_nanos);
        }
        if age < 180 {
            s.recent_180_nanos += i128::from(p.amount_nanos);
        } else if age < 360 {
            s.prior_180_nanos += i128::from(p.amount_nanos);
        }
        if occasions == 0 || p.day != occasion_day {
            occasions += 1;
            if occasions == 2 {
                s.first_gap = Some(f64::from(p.day - first_day));
            }
            occasion_day = p.day;
        }
        if occasions > 1 {
            repeat_total += i128::from(p.amount_nanos);
        }
        s.last_day = p.day;
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
