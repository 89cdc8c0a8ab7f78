//! Population reports over purchase days: cohort retention by first-purchase
//! month and churn rate by calendar period (definitions in docs/models.md).

use chrono::{Datelike, Duration, NaiveDate};

use crate::segment::{epoch_day, from_epoch_day};

/// Calendar periods reports bucket time into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Period {
    /// The first day of the period containing `day` (weeks start on Monday).
    pub fn start_of(self, day: NaiveDate) -> NaiveDate {
        let first = |y: i32, m: u32| NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(day);
        match self {
            Period::Day => day,
            Period::Week => day - Duration::days(day.weekday().num_days_from_monday().into()),
            Period::Month => first(day.year(), day.month()),
            Period::Quarter => first(day.year(), (day.month() - 1) / 3 * 3 + 1),
            Period::Year => first(day.year(), 1),
        }
    }

    /// The first day of the next period after the one starting at `start`.
    pub fn next(self, start: NaiveDate) -> NaiveDate {
        let add_months = |n: u32| {
            let months = start.year() * 12 + start.month0() as i32 + n as i32;
            NaiveDate::from_ymd_opt(months.div_euclid(12), months.rem_euclid(12) as u32 + 1, 1)
                .unwrap_or(start)
        };
        match self {
            Period::Day => start + Duration::days(1),
            Period::Week => start + Duration::days(7),
            Period::Month => add_months(1),
            Period::Quarter => add_months(3),
            Period::Year => add_months(12),
        }
    }

    /// "2026-01-31", "2026-W05" (ISO week), "2026-01", "2026-Q1", "2026".
    pub fn label(self, start: NaiveDate) -> String {
        match self {
            Period::Day => start.format("%Y-%m-%d").to_string(),
            Period::Week => {
                let w = start.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Month => start.format("%Y-%m").to_string(),
            Period::Quarter => format!("{}-Q{}", start.year(), start.month0() / 3 + 1),
            Period::Year => start.year().to_string(),
        }
    }

    /// The periods overlapping `[start, end)`, as (first day, first day of the next).
    pub fn between(self, start: NaiveDate, end: NaiveDate) -> Vec<(NaiveDate, NaiveDate)> {
        let mut out = Vec::new();
        let mut at = self.start_of(start);
        while at < end {
            let next = self.next(at);
            out.push((at, next));
            at = next;
        }
        out
    }
}

/// Month number (year * 12 + month0) of an epoch day.
fn month_of(day: i32) -> i32 {
    from_epoch_day(day).map_or(0, |d| d.year() * 12 + d.month0() as i32)
}

/// "YYYY-MM" of a month number.
pub fn month_label(month: i32) -> String {
    format!(
        "{:04}-{:02}",
        month.div_euclid(12),
        month.rem_euclid(12) + 1
    )
}

/// One first-purchase cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct Cohort {
    /// Month number (year * 12 + month0) of the first purchase.
    pub month: i32,
    pub customers: i64,
    /// `active[k]`: customers who purchased in month `month + k`; only months
    /// that have begun by `today` are reported.
    pub active: Vec<i64>,
}

/// Cohorts of customers by first-purchase month, for first purchases on days
/// in `[from_day, to_day)`, with `months` months after the cohort month.
/// `customers` holds each customer's purchase days (any order, repeats allowed).
pub fn cohort_retention<'a>(
    customers: impl IntoIterator<Item = &'a [i32]>,
    (from_day, to_day): (i32, i32),
    months: usize,
    today: i32,
) -> Vec<Cohort> {
    let now_month = month_of(today);
    let mut cohorts: std::collections::BTreeMap<i32, Cohort> = std::collections::BTreeMap::new();
    for days in customers {
        let Some(&first) = days.iter().min() else {
            continue;
        };
        if first < from_day || first >= to_day {
            continue;
        }
        let m0 = month_of(first);
        let span = ((now_month - m0 + 1).max(1) as usize).min(months + 1);
        let cohort = cohorts.entry(m0).or_insert_with(|| Cohort {
            month: m0,
            customers: 0,
            active: vec![0; span],
        });
        cohort.customers += 1;
        let mut seen = vec![false; cohort.active.len()];
        for &d in days {
            let k = (month_of(d) - m0) as usize;
            if k < seen.len() && !seen[k] {
                seen[k] = true;
                cohort.active[k] += 1;
            }
        }
    }
    cohorts.into_values().collect()
}

/// One period of the churn-rate report.
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnPeriod {
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// Customers who had purchased before the period and were not churned at its start.
    pub active_at_start: i64,
    /// Of those, customers whose silence passed `inactivity_days` during the period.
    pub churned: i64,
}

impl ChurnPeriod {
    pub fn rate(&self) -> f64 {
        if self.active_at_start == 0 {
            0.0
        } else {
            self.churned as f64 / self.active_at_start as f64
        }
    }
}

/// Churn per period: a customer is churned on the first day more than
/// `inactivity_days` after their last purchase.
pub fn churn_rate<'a>(
    customers: impl IntoIterator<Item = &'a [i32]> + Clone,
    periods: &[(NaiveDate, NaiveDate)],
    inactivity_days: i32,
) -> Vec<ChurnPeriod> {
    let mut out: Vec<ChurnPeriod> = periods
        .iter()
        .map(|&(start, end)| ChurnPeriod {
            start,
            end,
            active_at_start: 0,
            churned: 0,
        })
        .collect();
    for days in customers {
        let mut days = days.to_vec();
        days.sort_unstable();
        days.dedup();
        for period in &mut out {
            let (ps, pe) = (epoch_day(period.start), epoch_day(period.end));
            let before = days.partition_point(|&d| d < ps);
            let Some(&last_before) = days[..before].last() else {
                continue;
            };
            if ps - last_before > inactivity_days {
                continue; // already churned at the start
            }
            period.active_at_start += 1;
            let mut last = last_before;
            for &d in &days[before..] {
                if d > last + inactivity_days {
                    break;
                }
                last = d;
            }
            if last + inactivity_days + 1 < pe {
                period.churned += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> i32 {
        epoch_day(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    #[test]
    fn periods_are_calendar_aligned() {
        let day = NaiveDate::from_ymd_opt(2026, 5, 14).unwrap();
        assert_eq!(
            Period::Quarter.label(Period::Quarter.start_of(day)),
            "2026-Q2"
        );
        assert_eq!(Period::Week.start_of(day).to_string(), "2026-05-11");
        assert_eq!(Period::Week.label(Period::Week.start_of(day)), "2026-W20");
        let months = Period::Month.between(day, NaiveDate::from_ymd_opt(2026, 8, 1).unwrap());
        let labels: Vec<String> = months.iter().map(|p| Period::Month.label(p.0)).collect();
        assert_eq!(labels, ["2026-05", "2026-06", "2026-07"]);
        assert_eq!(
            Period::Year
                .next(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap())
                .to_string(),
            "2027-01-01"
        );
        assert_eq!(month_label(2026 * 12 + 11), "2026-12");
    }

    #[test]
    fn cohorts_count_customers_active_per_month() {
        let a = [d("2026-01-05"), d("2026-01-20"), d("2026-03-02")];
        let b = [d("2026-01-31"), d("2026-02-01")];
        let c = [d("2026-02-10")];
        let late = [d("2025-12-31"), d("2026-01-02")];
        let cohorts = cohort_retention(
            [&a[..], &b[..], &c[..], &late[..]],
            (d("2026-01-01"), d("2026-03-01")),
            3,
            d("2026-03-15"),
        );
        assert_eq!(cohorts.len(), 2);
        assert_eq!(month_label(cohorts[0].month), "2026-01");
        assert_eq!(cohorts[0].customers, 2);
        // Jan: both; Feb: b; Mar: a; April has not begun.
        assert_eq!(cohorts[0].active, [2, 1, 1]);
        assert_eq!(cohorts[1].customers, 1);
        assert_eq!(cohorts[1].active, [1, 0]);
    }

    #[test]
    fn churn_counts_silences_passing_the_limit_inside_the_period() {
        let periods = Period::Month.between(
            NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            NaiveDate::from_ymd_opt(2026, 5, 1).unwrap(),
        );
        // Limit 30 days. x: last bought 2026-02-10, silent: churns 2026-03-13 (March).
        // y: bought 2026-02-20 and 2026-03-15: active through April, churns 2026-04-15 (April).
        // z: last bought 2025-12-01: already churned before March.
        // w: first purchase in March: not active at the start of March.
        let x = [d("2026-02-10")];
        let y = [d("2026-02-20"), d("2026-03-15")];
        let z = [d("2025-12-01")];
        let w = [d("2026-03-05")];
        let r = churn_rate([&x[..], &y[..], &z[..], &w[..]], &periods, 30);
        assert_eq!((r[0].active_at_start, r[0].churned), (2, 1), "March");
        assert_eq!(
            (r[1].active_at_start, r[1].churned),
            (2, 2),
            "April: y and w"
        );
        assert!((r[0].rate() - 0.5).abs() < 1e-12);
    }
}
