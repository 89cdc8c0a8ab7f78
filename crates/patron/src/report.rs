//! `patron report ...`: readable report tables.

use patron_proto::feedback::{
    GetComplaintReportRequest, GetNpsReportRequest, feedback_service_client::FeedbackServiceClient,
};
use tonic::transport::Channel;

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
