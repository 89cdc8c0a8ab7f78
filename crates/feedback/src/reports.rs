//! Satisfaction and complaint reports.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use patron_domain::{
    ApiError,
    feedback::{NpsCounts, SurveyKind, quantile},
};
use patron_proto::{common::Period, feedback as pb};
use patron_runtime::{convert::optional_timestamp, error::ApiResult};
use patron_store::feedback::{FeedbackStore, complaint_group_column, response_group_column};

/// [start, end): absent bounds are open-ended.
pub(crate) fn window(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
    let start = optional_timestamp(start, "start_time")?.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let end = optional_timestamp(end, "end_time")?
        .unwrap_or_else(|| DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_default());
    if start >= end {
        return Err(ApiError::invalid_field(
            "end_time",
            "must be after start_time",
        ));
    }
    Ok((start, end))
}

fn group<'a>(
    group_by: &str,
    allowed: fn(&str) -> Option<&'static str>,
    names: &'a str,
) -> ApiResult<Option<&'static str>> {
    match group_by.trim() {
        "" => Ok(None),
        g => allowed(g).map(Some).ok_or_else(|| {
            ApiError::invalid_field("group_by", format!("must be one of \"\", {names}"))
        }),
    }
}

pub(crate) async fn nps(
    store: &FeedbackStore,
    req: pb::GetNpsReportRequest,
) -> ApiResult<pb::NpsReport> {
    let (start, end) = window(req.start_time.as_ref(), req.end_time.as_ref())?;
    let column = group(
        &req.group_by,
        response_group_column,
        "product_id, region, channel",
    )?;
    let overall = store
        .score_groups(SurveyKind::Nps, start, end, None)
        .await?;
    let total = overall.first().map(|g| g.nps).unwrap_or_default();
    let groups = match column {
        Some(c) => {
            store
                .score_groups(SurveyKind::Nps, start, end, Some(c))
                .await?
        }
        None => Vec::new(),
    };
    Ok(pb::NpsReport {
        nps: total.nps(),
        promoters: total.promoters,
        passives: total.passives,
        detractors: total.detractors,
        responses: total.responses(),
        groups: groups
            .into_iter()
            .map(|g| pb::NpsGroup {
                key: g.key,
                nps: g.nps.nps(),
                responses: g.nps.responses(),
                promoters: g.nps.promoters,
                passives: g.nps.passives,
                detractors: g.nps.detractors,
            })
            .collect(),
    })
}

pub(crate) async fn csat(
    store: &FeedbackStore,
    req: pb::GetCsatReportRequest,
) -> ApiResult<pb::CsatReport> {
    let (start, end) = window(req.start_time.as_ref(), req.end_time.as_ref())?;
    let column = group(
        &req.group_by,
        response_group_column,
        "product_id, region, channel",
    )?;
    let pct = |satisfied: i64, n: i64| {
        if n == 0 {
            0.0
        } else {
            100.0 * satisfied as f64 / n as f64
        }
    };
    let overall = store
        .score_groups(SurveyKind::Csat, start, end, None)
        .await?;
    let (satisfied, responses, sum) = overall
        .first()
        .map_or((0, 0, 0), |g| (g.satisfied, g.responses, g.score_sum));
    let groups = match column {
        Some(c) => {
            store
                .score_groups(SurveyKind::Csat, start, end, Some(c))
                .await?
        }
        None => Vec::new(),
    };
    Ok(pb::CsatReport {
        csat: pct(satisfied, responses),
        satisfied,
        responses,
        mean_score: if responses == 0 {
            0.0
        } else {
            sum as f64 / responses as f64
        },
        groups: groups
            .into_iter()
            .map(|g| pb::CsatGroup {
                key: g.key,
                csat: pct(g.satisfied, g.responses),
                responses: g.responses,
                satisfied: g.satisfied,
            })
            .collect(),
    })
}

pub(crate) async fn nps_trend(
    store: &FeedbackStore,
    req: pb::GetNpsTrendRequest,
) -> ApiResult<pb::NpsTrend> {
    let (start, end) = window(req.start_time.as_ref(), req.end_time.as_ref())?;
    let weekly = match Period::try_from(req.period) {
        Ok(Period::Week) => true,
        Ok(Period::Month | Period::Unspecified) => false,
        _ => {
            return Err(ApiError::invalid_field(
                "period",
                "must be PERIOD_WEEK or PERIOD_MONTH",
            ));
        }
    };
    let mut buckets: BTreeMap<String, NpsCounts> = BTreeMap::new();
    for (at, score) in store.nps_points(start, end).await? {
        let key = if weekly {
            let w = at.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        } else {
            format!("{}-{:02}", at.year(), at.month())
        };
        buckets.entry(key).or_default().add(score);
    }
    Ok(pb::NpsTrend {
        points: buckets
            .into_iter()
            .map(|(period, c)| pb::NpsTrendPoint {
                period,
                nps: c.nps(),
                responses: c.responses(),
            })
            .collect(),
    })
}

fn hours(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 3_600_000.0
}

#[derive(Default)]
struct Times {
    filed: i64,
    resolved: i64,
    to_resolve: Vec<f64>,
    to_respond: Vec<f64>,
}

pub(crate) async fn complaints(
    store: &FeedbackStore,
    req: pb::GetComplaintReportRequest,
    now: DateTime<Utc>,
) -> ApiResult<pb::ComplaintReport> {
    let (start, end) = window(req.start_time.as_ref(), req.end_time.as_ref())?;
    let column = group(
        &req.group_by,
        complaint_group_column,
        "type, product_id, region, assignee",
    )?;
    let mut overall = Times::default();
    let mut groups: BTreeMap<String, Times> = BTreeMap::new();
    for c in store.complaint_times(start, end, column).await? {
        for t in [&mut overall, groups.entry(c.key.clone()).or_default()] {
            t.filed += 1;
            if let Some(r) = c.resolved_time {
                t.resolved += 1;
                t.to_resolve.push(hours(c.filed_time, r));
            }
            if let Some(f) = c.first_response_time {
                t.to_respond.push(hours(c.filed_time, f));
            }
        }
    }
    let rate = |t: &Times| {
        if t.filed == 0 {
            0.0
        } else {
            t.resolved as f64 / t.filed as f64
        }
    };
    let mut backlog = [0i64; 5];
    for filed in store.open_filed_times().await? {
        let days = hours(filed, now) / 24.0;
        let bucket = match days {
            d if d < 1.0 => 0,
            d if d < 3.0 => 1,
            d if d < 7.0 => 2,
            d if d < 30.0 => 3,
            _ => 4,
        };
        backlog[bucket] += 1;
    }
    let mut report = pb::ComplaintReport {
        filed: overall.filed,
        resolved: overall.resolved,
        resolution_rate: rate(&overall),
        median_hours_to_resolve: quantile(&mut overall.to_resolve, 0.5).unwrap_or(0.0),
        p90_hours_to_resolve: quantile(&mut overall.to_resolve, 0.9).unwrap_or(0.0),
        median_hours_to_first_response: quantile(&mut overall.to_respond, 0.5).unwrap_or(0.0),
        p90_hours_to_first_response: quantile(&mut overall.to_respond, 0.9).unwrap_or(0.0),
        groups: Vec::new(),
        open_backlog: ["0-1d", "1-3d", "3-7d", "7-30d", "30d+"]
            .iter()
            .zip(backlog)
            .map(|(age, open)| pb::BacklogBucket {
                age: (*age).into(),
                open,
            })
            .collect(),
    };
    if column.is_some() {
        report.groups = groups
            .into_iter()
            .map(|(key, mut t)| pb::ComplaintGroup {
                key,
                filed: t.filed,
                resolved: t.resolved,
                resolution_rate: rate(&t),
                median_hours_to_resolve: quantile(&mut t.to_resolve, 0.5).unwrap_or(0.0),
                p90_hours_to_resolve: quantile(&mut t.to_resolve, 0.9).unwrap_or(0.0),
            })
            .collect();
    }
    Ok(report)
}

pub(crate) async fn product_opinions(
    store: &FeedbackStore,
    req: pb::GetProductOpinionSummaryRequest,
) -> ApiResult<pb::ProductOpinionSummary> {
    let (start, end) = window(req.start_time.as_ref(), req.end_time.as_ref())?;
    let complaints = store.complaints_per_product(start, end).await?;
    let nps = store
        .score_groups(SurveyKind::Nps, start, end, Some("product_id"))
        .await?;
    let mut products: BTreeMap<String, pb::ProductOpinion> = BTreeMap::new();
    for (product, n) in complaints {
        products
            .entry(product.clone())
            .or_insert_with(|| pb::ProductOpinion {
                product_id: product,
                ..Default::default()
            })
            .complaints = n;
    }
    for g in nps {
        let p = products
            .entry(g.key.clone())
            .or_insert_with(|| pb::ProductOpinion {
                product_id: g.key.clone(),
                ..Default::default()
            });
        p.detractors = g.nps.detractors;
        p.nps_responses = g.nps.responses();
        p.nps = g.nps.nps();
    }
    let mut products: Vec<_> = products.into_values().collect();
    products.sort_by(|a, b| {
        (b.complaints + b.detractors)
            .cmp(&(a.complaints + a.detractors))
            .then(a.product_id.cmp(&b.product_id))
    });
    Ok(pb::ProductOpinionSummary { products })
}
