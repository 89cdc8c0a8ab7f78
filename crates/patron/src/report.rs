//! `patron report ...`: readable report tables.

use crate::client::Channel;
use patron_proto::feedback::{
    GetComplaintReportRequest, GetNpsReportRequest, feedback_service_client::FeedbackServiceClient,
};

fn group_by(by: &str) -> String {
    match by {
        "product" => "product_id".into(),
        other => other.into(),
    }
}

pub(crate) async fn nps(channel: Channel, by: &str) -> anyhow::Result<()> {
    let r = FeedbackServiceClient::new(channel)
        .get_nps_report(GetNpsReportRequest {
            group_by: group_by(by),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "NPS {:+.1} from {} responses ({} promoters, {} passives, {} detractors)",
        r.nps, r.responses, r.promoters, r.passives, r.detractors
    );
    if !r.groups.is_empty() {
        println!(
            "\n{:<24} {:>8} {:>10} {:>10} {:>10}",
            by.to_uppercase(),
            "NPS",
            "RESPONSES",
            "PROMOTERS",
            "DETRACTORS"
        );
        for g in &r.groups {
            println!(
                "{:<24} {:>+8.1} {:>10} {:>10} {:>10}",
                g.key, g.nps, g.responses, g.promoters, g.detractors
            );
        }
    }
    Ok(())
}

pub(crate) async fn complaints(channel: Channel, by: &str) -> anyhow::Result<()> {
    let r = FeedbackServiceClient::new(channel)
        .get_complaint_report(GetComplaintReportRequest {
            group_by: group_by(by),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "{} filed, {} resolved ({:.1}%), hours to resolve: median {:.1}, p90 {:.1}; to first response: median {:.1}, p90 {:.1}",
        r.filed,
        r.resolved,
        100.0 * r.resolution_rate,
        r.median_hours_to_resolve,
        r.p90_hours_to_resolve,
        r.median_hours_to_first_response,
        r.p90_hours_to_first_response
    );
    if !r.groups.is_empty() {
        println!(
            "\n{:<24} {:>7} {:>9} {:>8} {:>12} {:>9}",
            by.to_uppercase(),
            "FILED",
            "RESOLVED",
            "RATE",
            "MEDIAN (H)",
            "P90 (H)"
        );
        for g in &r.groups {
            println!(
                "{:<24} {:>7} {:>9} {:>7.1}% {:>12.1} {:>9.1}",
                g.key,
                g.filed,
                g.resolved,
                100.0 * g.resolution_rate,
                g.median_hours_to_resolve,
                g.p90_hours_to_resolve
            );
        }
    }
    let backlog: Vec<String> = r
        .open_backlog
        .iter()
        .map(|b| format!("{} {}", b.age, b.open))
        .collect();
    println!("\nopen backlog by age: {}", backlog.join(", "));
    Ok(())
}

pub(crate) async fn segments(channel: Channel) -> anyhow::Result<()> {
    use patron_proto::scoring::{
        GetScoreDistributionRequest, scoring_service_client::ScoringServiceClient,
    };
    let d = ScoringServiceClient::new(channel)
        .get_score_distribution(GetScoreDistributionRequest {})
        .await?
        .into_inner();
    println!("{} scored customers", d.customers);
    for (title, buckets) in [
        ("RFM SEGMENT", &d.rfm_segments),
        ("VALUE TIER", &d.value_tiers),
        ("VALUE QUADRANT", &d.value_quadrants),
        ("CHURN RISK", &d.churn_risks),
        ("LIFECYCLE STAGE", &d.lifecycle_stages),
    ] {
        println!("\n{title:<28} {:>9} {:>7}", "CUSTOMERS", "SHARE");
        for b in buckets {
            let share = if d.customers == 0 {
                0.0
            } else {
                100.0 * b.count as f64 / d.customers as f64
            };
            println!("{:<28} {:>9} {:>6.1}%", b.key, b.count, share);
        }
    }
    Ok(())
}

fn period(name: &str) -> anyhow::Result<i32> {
    use patron_proto::common::Period;
    Period::from_str_name(&format!("PERIOD_{}", name.to_ascii_uppercase()))
        .map(|p| p as i32)
        .ok_or_else(|| anyhow::anyhow!("--period {name:?}: one of day, week, month, quarter, year"))
}

fn since(months_back: Option<chrono::NaiveDate>) -> Option<prost_types::Timestamp> {
    months_back.map(|d| prost_types::Timestamp {
        seconds: d
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc()
            .timestamp(),
        nanos: 0,
    })
}

/// Cohort retention: one line per first-purchase month, retention per month after.
pub(crate) async fn cohorts(
    channel: Channel,
    from: Option<chrono::NaiveDate>,
    months: i32,
) -> anyhow::Result<()> {
    use patron_proto::scoring::{
        GetCohortRetentionReportRequest, scoring_service_client::ScoringServiceClient,
    };
    let r = ScoringServiceClient::new(channel)
        .get_cohort_retention_report(GetCohortRetentionReportRequest {
            start_time: since(from),
            end_time: None,
            months,
        })
        .await?
        .into_inner();
    print!("{:<8} {:>9}", "COHORT", "CUSTOMERS");
    let width = r
        .cohorts
        .iter()
        .map(|c| c.retention.len())
        .max()
        .unwrap_or(0);
    for k in 0..width {
        print!(" {:>5}", format!("M{k}"));
    }
    println!();
    for c in &r.cohorts {
        print!("{:<8} {:>9}", c.cohort, c.customers);
        for x in &c.retention {
            print!(" {:>4.0}%", x * 100.0);
        }
        println!();
    }
    Ok(())
}

/// Churn rate per period.
pub(crate) async fn churn(
    channel: Channel,
    from: Option<chrono::NaiveDate>,
    by: &str,
) -> anyhow::Result<()> {
    use patron_proto::scoring::{
        GetChurnRateReportRequest, scoring_service_client::ScoringServiceClient,
    };
    let r = ScoringServiceClient::new(channel)
        .get_churn_rate_report(GetChurnRateReportRequest {
            start_time: since(from),
            end_time: None,
            period: period(by)?,
        })
        .await?
        .into_inner();
    println!(
        "churned = silent for more than {} days\n",
        r.inactivity_days
    );
    println!(
        "{:<10} {:>15} {:>9} {:>8}",
        "PERIOD", "ACTIVE AT START", "CHURNED", "RATE"
    );
    for p in &r.periods {
        println!(
            "{:<10} {:>15} {:>9} {:>7.1}%",
            p.period,
            p.active_at_start,
            p.churned,
            p.churn_rate * 100.0
        );
    }
    Ok(())
}

/// Transactions, customers, units and revenue per region x category x period
/// (x sales channel with `by_channel`).
pub(crate) async fn products(
    channel: Channel,
    from: Option<chrono::NaiveDate>,
    by: &str,
    by_channel: bool,
) -> anyhow::Result<()> {
    use patron_proto::scoring::{
        GetProductDistributionReportRequest, scoring_service_client::ScoringServiceClient,
    };
    let r = ScoringServiceClient::new(channel)
        .get_product_distribution_report(GetProductDistributionReportRequest {
            start_time: since(from),
            end_time: None,
            period: period(by)?,
            by_channel,
        })
        .await?
        .into_inner();
    // The channel column only when asked for.
    let channel_of = |c: &str| {
        if by_channel {
            format!(" {c:<10}")
        } else {
            String::new()
        }
    };
    println!(
        "{:<10} {:<12} {:<14}{} {:>12} {:>10} {:>9} {:>16}",
        "PERIOD",
        "REGION",
        "CATEGORY",
        channel_of("CHANNEL"),
        "TRANSACTIONS",
        "CUSTOMERS",
        "UNITS",
        "REVENUE"
    );
    for row in &r.rows {
        let revenue = row.revenue.as_ref().map_or("-".to_owned(), |m| {
            format!(
                "{:.2} {}",
                m.units as f64 + f64::from(m.nanos) / 1e9,
                m.currency_code
            )
        });
        println!(
            "{:<10} {:<12} {:<14}{} {:>12} {:>10} {:>9} {:>16}",
            row.period,
            row.region,
            row.category,
            channel_of(&row.channel),
            row.transactions,
            row.customers,
            row.quantity,
            revenue
        );
    }
    Ok(())
}
