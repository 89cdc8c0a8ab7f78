//! Population reports: cohort retention by first-purchase month and churn
//! rate by period over the read model's purchase days, and the product
//! distribution over the product rollup (definitions in docs/models.md).

use chrono::{DateTime, Duration, Utc};
use patron_domain::{
    ApiError, Currency, Money, Violations,
    models::{
        reports::{Period, churn_rate, cohort_retention, month_label},
        scores::ModelSettings,
    },
    segment::epoch_day,
};
use patron_proto::{common, scoring as pb};
use patron_runtime::{
    convert::{now, optional_timestamp, to_money},
    error::ApiResult,
    population::PopulationGate,
};
use patron_store::scoring::ScoringStore;

use crate::models::day_of;

/// Most periods one churn report covers.
const MAX_PERIODS: usize = 1_000;

fn window(
    v: &mut Violations,
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
    default_start: impl FnOnce(DateTime<Utc>) -> DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let start = v.take(optional_timestamp(start, "start_time"));
    let end = v.take(optional_timestamp(end, "end_time"));
    let (Some(start), Some(end)) = (start, end) else {
        return None;
    };
    let end = end.unwrap_or_else(now);
    let start = start.unwrap_or_else(|| default_start(end));
    if start >= end {
        v.add("end_time", "must be after start_time");
        return None;
    }
    Some((start, end))
}

pub(crate) async fn cohorts(
    store: &ScoringStore,
    gate: &PopulationGate,
    req: pb::GetCohortRetentionReportRequest,
) -> ApiResult<pb::CohortRetentionReport> {
    let mut v = Violations::new();
    let months = match req.months {
        0 => 12,
        n @ 1..=120 => n as usize,
        _ => {
            v.add("months", "must be between 0 (default 12) and 120");
            0
        }
    };
    let window = window(
        &mut v,
        req.start_time.as_ref(),
        req.end_time.as_ref(),
        |_| DateTime::<Utc>::UNIX_EPOCH,
    );
    v.finish()?;
    let (start, end) = window.expect("checked");
    // A partial first day counts from its start; the end is exclusive.
    let range = (day_of(start), day_of(end - Duration::nanoseconds(1)) + 1);
    let _slot = gate.enter().await;
    let days = store.customer_days().await?;
    let cohorts = cohort_retention(days.customers(), range, months, day_of(now()));
    Ok(pb::CohortRetentionReport {
        cohorts: cohorts
            .into_iter()
            .map(|c| pb::Cohort {
                cohort: month_label(c.month),
                customers: c.customers,
                retention: c
                    .active
                    .iter()
                    .map(|a| *a as f64 / c.customers as f64)
                    .collect(),
                active: c.active,
            })
            .collect(),
    })
}

pub(crate) async fn churn(
    store: &ScoringStore,
    gate: &PopulationGate,
    req: pb::GetChurnRateReportRequest,
) -> ApiResult<pb::ChurnRateReport> {
    let mut v = Violations::new();
    let period = period_of(req.period, &mut v);
    let window = window(
        &mut v,
        req.start_time.as_ref(),
        req.end_time.as_ref(),
        |end| end - Duration::days(365),
    );
    v.finish()?;
    let (period, (start, end)) = (period.expect("checked"), window.expect("checked"));
    let periods = period.between(
        start.date_naive(),
        (end - Duration::nanoseconds(1)).date_naive() + Duration::days(1),
    );
    if periods.len() > MAX_PERIODS {
        return Err(ApiError::invalid_field(
            "period",
            format!(
                "the window holds {} periods; at most {MAX_PERIODS}",
                periods.len()
            ),
        ));
    }
    let inactivity = ModelSettings::default().churned_after_days as i32;
    let _slot = gate.enter().await;
    let days = store.customer_days().await?;
    let report = churn_rate(days.customers(), &periods, inactivity);
    Ok(pb::ChurnRateReport {
        periods: report
            .iter()
            .map(|p| pb::ChurnRatePeriod {
                period: period.label(p.start),
                active_at_start: p.active_at_start,
                churned: p.churned,
                churn_rate: p.rate(),
            })
            .collect(),
        inactivity_days: inactivity,
    })
}

fn period_of(raw: i32, v: &mut Violations) -> Option<Period> {
    match common::Period::try_from(raw) {
        Ok(common::Period::Unspecified | common::Period::Month) => Some(Period::Month),
        Ok(common::Period::Day) => Some(Period::Day),
        Ok(common::Period::Week) => Some(Period::Week),
        Ok(common::Period::Quarter) => Some(Period::Quarter),
        Ok(common::Period::Year) => Some(Period::Year),
        Err(_) => {
            v.add("period", "is not a Period");
            None
        }
    }
}

/// Transactions, distinct customers, units and revenue per region x
/// category x period (x channel, if asked; and currency, when groups mix
/// currencies).
pub(crate) async fn products(
    store: &ScoringStore,
    gate: &PopulationGate,
    req: pb::GetProductDistributionReportRequest,
) -> ApiResult<pb::ProductDistributionReport> {
    let mut v = Violations::new();
    let period = period_of(req.period, &mut v);
    let window = window(
        &mut v,
        req.start_time.as_ref(),
        req.end_time.as_ref(),
        |end| end - Duration::days(365),
    );
    v.finish()?;
    let (period, (start, end)) = (period.expect("checked"), window.expect("checked"));
    let periods = period.between(
        start.date_naive(),
        (end - Duration::nanoseconds(1)).date_naive() + Duration::days(1),
    );
    if periods.len() > MAX_PERIODS {
        return Err(ApiError::invalid_field(
            "period",
            format!(
                "the window holds {} periods; at most {MAX_PERIODS}",
                periods.len()
            ),
        ));
    }
    let starts: Vec<i32> = periods.iter().map(|p| epoch_day(p.0)).collect();
    let _slot = gate.enter().await;
    let mut groups = store
        .product_groups(
            day_of(start),
            day_of(end - Duration::nanoseconds(1)) + 1,
            &starts,
            req.by_channel,
        )
        .await?;
    groups.sort_unstable_by(|a, b| {
        (a.period, &a.region, &a.category, &a.channel, &a.currency).cmp(&(
            b.period,
            &b.region,
            &b.category,
            &b.channel,
            &b.currency,
        ))
    });
    Ok(pb::ProductDistributionReport {
        rows: groups
            .into_iter()
            .map(|g| pb::ProductDistributionRow {
                period: period.label(periods[g.period].0),
                transactions: g.transactions,
                customers: g.customers,
                quantity: g.quantity,
                revenue: Currency::parse(&g.currency).ok().map(|c| {
                    to_money(Money {
                        currency: c,
                        nanos: i64::try_from(g.amount_nanos).unwrap_or(i64::MAX),
                    })
                }),
                region: g.region,
                category: g.category,
                channel: g.channel,
            })
            .collect(),
    })
}
