//! Deterministic synthetic data: a population a newcomer can query at once.
//!
//! Customers are acquired over two years. Each buys at a personal rate
//! (gamma-distributed across customers) and after every purchase may drop
//! out for good (beta-distributed probability), the BG/NBD story, so the
//! data has loyal regulars, one-time buyers and churners. Purchases are
//! thinned by a seasonal curve (busy November-December, quiet summer). Spend
//! levels, category preferences, channels and regions vary by customer;
//! events surround purchases and some customers contact service.
//! The same seed gives the same data, with stable ids, so seeding twice is
//! idempotent (the second run only finds duplicates).

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use patron_proto::{
    common::{MarketingConsent, Money},
    google::r#type::Date,
    profile as pb,
};
use prost_types::Timestamp;
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Gamma};

/// The end of the demo history (fixed, so the data never depends on today).
pub(crate) fn demo_end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

const DAYS: i64 = 730;
const REGIONS: &[(&str, &[&str])] = &[
    ("North", &["Hamburg", "Bremen", "Kiel"]),
    ("South", &["Munich", "Stuttgart", "Nuremberg"]),
    ("East", &["Berlin", "Leipzig", "Dresden"]),
    ("West", &["Cologne", "Dusseldorf", "Essen"]),
    ("Central", &["Frankfurt", "Kassel", "Erfurt"]),
];
const CATEGORIES: &[(&str, f64)] = &[
    ("books", 18.0),
    ("electronics", 180.0),
    ("fashion", 60.0),
    ("home", 75.0),
    ("beauty", 28.0),
    ("sports", 55.0),
    ("toys", 35.0),
    ("grocery", 22.0),
];
const CHANNELS: &[&str] = &["web", "app", "store"];
const FIRST: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hannah", "Jonas", "Lea", "Lukas",
    "Mia", "Noah", "Paul", "Sophie", "Tim", "Lina", "Max", "Nora", "Elias",
];
const LAST: &[&str] = &[
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
    "Neumann",
    "Schwarz",
];
const OCCUPATIONS: &[&str] = &[
    "engineer",
    "teacher",
    "nurse",
    "student",
    "designer",
    "retired",
    "manager",
    "craftsperson",
];

/// One customer with everything they did.
pub(crate) struct DemoCustomer {
    pub(crate) customer: pb::Customer,
    /// `customer_id` left empty: filled in once the server assigned the id.
    pub(crate) transactions: Vec<pb::Transaction>,
    pub(crate) events: Vec<pb::Event>,
    pub(crate) interactions: Vec<pb::Interaction>,
}

fn ts(t: DateTime<Utc>) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

fn eur(amount: f64) -> Option<Money> {
    let cents = (amount * 100.0).round() as i64;
    Some(Money {
        currency_code: "EUR".into(),
        units: cents / 100,
        nanos: ((cents % 100) * 10_000_000) as i32,
    })
}

/// Relative purchase intensity by month (1 = average).
fn seasonality(month: u32) -> f64 {
    [
        0.8, 0.75, 0.9, 0.95, 1.0, 0.85, 0.8, 0.85, 1.0, 1.05, 1.5, 1.9,
    ][(month as usize - 1) % 12]
}

/// The population for `seed`, `count` customers.
pub(crate) fn generate(seed: u64, count: usize) -> Vec<DemoCustomer> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let end = demo_end();
    let start = end - Duration::days(DAYS);
    // BG/NBD-style heterogeneity: purchase rate per day and dropout probability.
    let rate = Gamma::new(0.9, 1.0 / 45.0).expect("valid gamma");
    let dropout = Beta::new(0.7, 3.5).expect("valid beta");
    let spend = Gamma::new(4.0, 0.25).expect("valid gamma");
    (0..count)
        .map(|i| {
            let external_id = format!("demo-{i:05}");
            let first = *FIRST.choose(&mut rng).unwrap_or(&"Alex");
            let last = *LAST.choose(&mut rng).unwrap_or(&"Meyer");
            let (region, cities) = REGIONS[rng.random_range(0..REGIONS.len())];
            let city = cities[rng.random_range(0..cities.len())];
            let acquired = start + Duration::days(rng.random_range(0..DAYS - 7));
            let birth = NaiveDate::from_ymd_opt(
                rng.random_range(1950..2006),
                rng.random_range(1..=12),
                rng.random_range(1..=28),
            )
            .unwrap_or_default();
            let vip = rng.random_bool(0.05);
            let customer = pb::Customer {
                external_id: external_id.clone(),
                display_name: format!("{first} {last}"),
                email: format!("{}.{}.{i}@example.com", first.to_lowercase(), ascii(last)),
                phone: format!("+49151{:07}", rng.random_range(0..10_000_000)),
                birth_date: Some(Date {
                    year: birth.year(),
                    month: birth.month() as i32,
                    day: birth.day() as i32,
                }),
                gender: rng.random_range(1..=4),
                region: region.into(),
                city: city.into(),
                occupation: (*OCCUPATIONS.choose(&mut rng).unwrap_or(&"other")).into(),
                income_band: rng.random_range(1..=5),
                tags: if vip { vec!["vip".into()] } else { vec![] },
                attributes: [("source".to_owned(), "demo".to_owned())].into(),
                marketing_consent: Some(MarketingConsent {
                    email: rng.random_bool(0.7),
                    sms: rng.random_bool(0.35),
                    phone: rng.random_bool(0.2),
                    push: rng.random_bool(0.4),
                    post: rng.random_bool(0.5),
                }),
                relationship_start_date: Some(Date {
                    year: acquired.year(),
                    month: acquired.month() as i32,
                    day: acquired.day() as i32,
                }),
                ..Default::default()
            };

            let lambda: f64 = rate.sample(&mut rng) * if vip { 2.5 } else { 1.0 };
            let p_drop: f64 = dropout.sample(&mut rng);
            let level: f64 = spend.sample(&mut rng);
            let favourite = rng.random_range(0..CATEGORIES.len());
            let home_channel = rng.random_range(0..CHANNELS.len());

            let mut transactions = Vec::new();
            let mut events = Vec::new();
            let mut t = acquired;
            loop {
                let category_index = if rng.random_bool(0.6) {
                    favourite
                } else {
                    rng.random_range(0..CATEGORIES.len())
                };
                let (category, base) = CATEGORIES[category_index];
                let amount = (base * level * rng.random_range(0.5..1.6)).max(1.0);
                let channel = if rng.random_bool(0.75) {
                    CHANNELS[home_channel]
                } else {
                    *CHANNELS.choose(&mut rng).unwrap_or(&"web")
                };
                let at = t + Duration::minutes(rng.random_range(8 * 60..22 * 60));
                let k = transactions.len();
                let product = format!("{category}-{:03}", rng.random_range(0..40));
                for (j, kind) in [pb::EventKind::ProductView, pb::EventKind::AddToCart]
                    .into_iter()
                    .enumerate()
                {
                    events.push(pb::Event {
                        id: format!("{external_id}-e{k}-{j}"),
                        kind: kind as i32,
                        occurred_at: ts(at - Duration::minutes(10 - j as i64 * 5)),
                        properties: [("product_id".to_owned(), product.clone())].into(),
                        ..Default::default()
                    });
                }
                transactions.push(pb::Transaction {
                    id: format!("{external_id}-t{k}"),
                    occurred_at: ts(at),
                    amount: eur(amount),
                    cost: eur(amount * rng.random_range(0.45..0.7)),
                    channel: channel.into(),
                    product_id: product,
                    category: category.into(),
                    quantity: if rng.random_bool(0.85) {
                        1
                    } else {
                        rng.random_range(2..4)
                    },
                    region: region.into(),
                    ..Default::default()
                });
                if rng.random_bool(p_drop.clamp(0.0, 1.0)) {
                    break; // this customer is gone for good
                }
                // Next purchase: exponential waiting time, thinned by season.
                let mut next = t;
                loop {
                    let wait = -rng.random::<f64>().max(1e-12).ln() / lambda.max(1e-6);
                    next += Duration::seconds((wait * 86_400.0).min(4.0e8) as i64);
                    if next >= end || rng.random_bool((seasonality(next.month()) / 1.9).min(1.0)) {
                        break;
                    }
                }
                if next >= end {
                    break;
                }
                t = next;
            }
            for j in 0..rng.random_range(0..6) {
                events.push(pb::Event {
                    id: format!("{external_id}-v{j}"),
                    kind: pb::EventKind::PageView as i32,
                    occurred_at: ts(acquired
                        + Duration::days(rng.random_range(0..(end - acquired).num_days().max(1)))),
                    properties: [("page".to_owned(), "/".to_owned())].into(),
                    ..Default::default()
                });
            }
            let mut interactions = Vec::new();
            if rng.random_bool(0.15) {
                for j in 0..rng.random_range(1..4) {
                    let kinds = [
                        pb::InteractionKind::Call,
                        pb::InteractionKind::Email,
                        pb::InteractionKind::Chat,
                    ];
                    interactions.push(pb::Interaction {
                        id: format!("{external_id}-i{j}"),
                        kind: kinds[rng.random_range(0..kinds.len())] as i32,
                        occurred_at: ts(acquired
                            + Duration::days(
                                rng.random_range(0..(end - acquired).num_days().max(1)),
                            )),
                        rep: format!("rep-{:02}", rng.random_range(1..25)),
                        outcome: (*["resolved", "follow_up", "sale", "no_answer"]
                            .choose(&mut rng)
                            .unwrap_or(&"resolved"))
                        .into(),
                        notes: "demo contact".into(),
                        ..Default::default()
                    });
                }
            }
            DemoCustomer {
                customer,
                transactions,
                events,
                interactions,
            }
        })
        .collect()
}

fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'ü' => 'u',
            'ö' => 'o',
            'ä' => 'a',
            'ß' => 's',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_plausible() {
        let a = generate(7, 300);
        let b = generate(7, 300);
        assert_eq!(a.len(), 300);
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.customer == y.customer && x.transactions == y.transactions)
        );
        let purchases: usize = a.iter().map(|c| c.transactions.len()).sum();
        let one_time = a.iter().filter(|c| c.transactions.len() == 1).count();
        assert!(purchases > 600, "{purchases}");
        assert!(
            one_time > 30 && one_time < 250,
            "one-time buyers: {one_time}"
        );
        let end = demo_end().timestamp();
        assert!(
            a.iter()
                .flat_map(|c| &c.transactions)
                .all(|t| t.occurred_at.as_ref().unwrap().seconds < end + 86_400)
        );
    }

    #[test]
    fn demo_segments_are_valid_rules() {
        for (name, rule, _) in DEMO_SEGMENTS {
            patron_domain::segment::Rule::parse(rule).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

/// What a seeding run wrote.
#[derive(Debug, Default)]
pub(crate) struct SeedSummary {
    pub(crate) customers: usize,
    /// Customers with at least one purchase.
    pub(crate) buyers: usize,
    pub(crate) transactions: usize,
    pub(crate) events: usize,
    pub(crate) interactions: usize,
    pub(crate) survey_responses: usize,
    pub(crate) complaints: usize,
    pub(crate) duplicates: usize,
}

/// Survey answers and complaint history for the seeded customers: about 40%
/// answered NPS (lower scores among customers who stopped buying), 20% CSAT,
/// and 6% complained (most complaints resolved, some still open).
fn feedback_for(
    seed: u64,
    customers: &[(String, String, i64)],
) -> (
    Vec<patron_proto::feedback::SurveyResponse>,
    Vec<(String, patron_proto::feedback::Complaint)>,
) {
    use patron_proto::feedback as fb;
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(1));
    let end = demo_end().timestamp();
    let products = [
        "books-001",
        "electronics-007",
        "fashion-012",
        "home-003",
        "toys-020",
    ];
    let mut responses = Vec::new();
    let mut complaints = Vec::new();
    for (external_id, id, last_purchase) in customers {
        let lapsed = end - last_purchase > 200 * 86_400;
        let at = (*last_purchase + rng.random_range(1..20) * 86_400).min(end - 3_600);
        let product = products[rng.random_range(0..products.len())];
        if rng.random_bool(0.4) {
            let score = if lapsed {
                rng.random_range(0..=8)
            } else {
                rng.random_range(4..=10)
            };
            responses.push(fb::SurveyResponse {
                id: format!("{external_id}-nps"),
                customer_id: id.clone(),
                kind: fb::SurveyKind::Nps as i32,
                score,
                comment: if score <= 6 {
                    "delivery was slow".into()
                } else {
                    String::new()
                },
                product_id: product.into(),
                region: String::new(),
                channel: "email".into(),
                occurred_at: Some(Timestamp {
                    seconds: at,
                    nanos: 0,
                }),
            });
        }
        if rng.random_bool(0.2) {
            responses.push(fb::SurveyResponse {
                id: format!("{external_id}-csat"),
                customer_id: id.clone(),
                kind: fb::SurveyKind::Csat as i32,
                score: rng.random_range(1..=5).max(if lapsed { 1 } else { 3 }),
                product_id: product.into(),
                channel: "web".into(),
                occurred_at: Some(Timestamp {
                    seconds: at,
                    nanos: 0,
                }),
                ..Default::default()
            });
        }
        if rng.random_bool(0.06) {
            let filed = at;
            let open = filed > end - 20 * 86_400 || rng.random_bool(0.1);
            let hours = rng.random_range(1..200);
            complaints.push((
                format!("demo-complaint-{external_id}"),
                fb::Complaint {
                    customer_id: id.clone(),
                    r#type: ["delivery", "billing", "quality", "service"][rng.random_range(0..4)]
                        .into(),
                    product_id: product.into(),
                    region: String::new(),
                    channel: "phone".into(),
                    assignee: format!("rep-{:02}", rng.random_range(1..12)),
                    severity: rng.random_range(1..=4),
                    status: if open {
                        fb::ComplaintStatus::Open as i32
                    } else {
                        fb::ComplaintStatus::Closed as i32
                    },
                    description: "demo complaint".into(),
                    filed_time: Some(Timestamp {
                        seconds: filed,
                        nanos: 0,
                    }),
                    resolved_time: (!open).then_some(Timestamp {
                        seconds: (filed + hours * 3_600).min(end),
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            ));
        }
    }
    (responses, complaints)
}

/// Writes the demo population through the public API (so the change feed
/// and every consumer see it as they would see real data).
pub(crate) async fn seed(
    channel: crate::client::Channel,
    seed: u64,
    count: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<SeedSummary> {
    use patron_proto::profile::customer_profile_service_client::CustomerProfileServiceClient;
    let client_channel = channel.clone();
    let mut client = CustomerProfileServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let mut population = generate(seed, count);
    progress.set_length(population.len() as u64);
    let mut summary = SeedSummary::default();
    let mut seeded: Vec<(String, String, i64)> = Vec::with_capacity(count);
    for chunk in population.chunks_mut(500) {
        let customers = chunk.iter().map(|c| c.customer.clone()).collect();
        let stored = client
            .upsert_customers(pb::UpsertCustomersRequest { customers })
            .await?
            .into_inner();
        summary.customers += stored.created as usize;
        let mut transactions = Vec::new();
        let mut events = Vec::new();
        let mut interactions = Vec::new();
        for (demo, stored) in chunk.iter_mut().zip(stored.customers) {
            summary.buyers += usize::from(!demo.transactions.is_empty());
            let last = demo
                .transactions
                .last()
                .and_then(|t| t.occurred_at.as_ref())
                .map_or(0, |t| t.seconds);
            seeded.push((stored.external_id.clone(), stored.id.clone(), last));
            for t in &mut demo.transactions {
                t.customer_id = stored.id.clone();
            }
            for e in &mut demo.events {
                e.customer_id = stored.id.clone();
            }
            for i in &mut demo.interactions {
                i.customer_id = stored.id.clone();
            }
            transactions.append(&mut demo.transactions);
            events.append(&mut demo.events);
            interactions.append(&mut demo.interactions);
        }
        for batch in transactions.chunks(5_000) {
            let r = client
                .record_transactions(pb::RecordTransactionsRequest {
                    transactions: batch.to_vec(),
                })
                .await?
                .into_inner();
            summary.transactions += r.accepted as usize;
            summary.duplicates += r.duplicates as usize;
        }
        for batch in events.chunks(5_000) {
            let r = client
                .record_events(pb::RecordEventsRequest {
                    events: batch.to_vec(),
                })
                .await?
                .into_inner();
            summary.events += r.accepted as usize;
            summary.duplicates += r.duplicates as usize;
        }
        for batch in interactions.chunks(5_000) {
            let r = client
                .record_interactions(pb::RecordInteractionsRequest {
                    interactions: batch.to_vec(),
                })
                .await?
                .into_inner();
            summary.interactions += r.accepted as usize;
            summary.duplicates += r.duplicates as usize;
        }
        progress.inc(chunk.len() as u64);
    }
    let (responses, complaints) = feedback_for(seed, &seeded);
    let mut feedback =
        patron_proto::feedback::feedback_service_client::FeedbackServiceClient::new(client_channel);
    for batch in responses.chunks(5_000) {
        let r = feedback
            .submit_survey_responses(patron_proto::feedback::SubmitSurveyResponsesRequest {
                responses: batch.to_vec(),
            })
            .await?
            .into_inner();
        summary.survey_responses += r.accepted as usize;
        summary.duplicates += r.duplicates as usize;
    }
    for (request_id, complaint) in complaints {
        feedback
            .file_complaint(patron_proto::feedback::FileComplaintRequest {
                complaint: Some(complaint),
                request_id,
            })
            .await?;
        summary.complaints += 1;
    }
    progress.finish_and_clear();
    Ok(summary)
}

/// Segments for the seed use cases (docs/segments.md explains each).
pub(crate) const DEMO_SEGMENTS: &[(&str, &str, &str)] = &[
    (
        "High-value retention",
        r#"value.tier = "high" and churn.risk in ("medium", "high")"#,
        "Valuable customers showing churn signals: retention offers before they go.",
    ),
    (
        "Service recovery",
        r#"feedback.nps_category = "detractor" or feedback.open_complaints > 0"#,
        "Detractors and customers with an open complaint: fix the experience before selling.",
    ),
    (
        "Win-back at risk",
        r#"rfm.segment in ("at_risk", "cant_lose_them") and days_since_last_purchase > 90"#,
        "Good customers who have gone quiet for a quarter.",
    ),
    (
        "Cross-sell beauty to fashion buyers",
        r#"bought_category("fashion") and not bought_category("beauty") and consent.email"#,
        "Fashion buyers who never bought beauty (check SuggestCrossSell for the lift).",
    ),
    (
        "Up-sell growth potential",
        r#"value.quadrant = "grow" and clv.p_alive > 0.5"#,
        "Low current value, high potential, still active.",
    ),
    (
        "Care: birthdays and anniversaries this week",
        "days_to_birthday <= 7 or days_to_anniversary <= 7",
        "A greeting (no offer) for the week's birthdays and relationship anniversaries.",
    ),
    (
        "New-customer nurture",
        r#"lifecycle.stage = "new" and purchases = 1"#,
        "One purchase so far: help them to the second.",
    ),
];

/// After seeding: fits the purchase models and scores everyone as of the end
/// of the demo history, then saves the demo segments, so scores, reports
/// and target lists answer at once.
pub(crate) async fn score_and_segment(
    channel: crate::client::Channel,
    buyers: usize,
) -> anyhow::Result<()> {
    use patron_proto::{
        campaign::{self as cpb, campaign_service_client::CampaignServiceClient},
        scoring::{self as spb, scoring_service_client::ScoringServiceClient},
    };
    let as_of = ts(demo_end());
    let mut scoring = ScoringServiceClient::new(channel.clone());
    // Scoring follows the profile feed: wait until it has seen every buyer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let fit = scoring
            .fit_model(spb::FitModelRequest {
                as_of,
                holdout_end: None,
            })
            .await;
        match fit {
            Ok(f) if f.get_ref().customers as usize >= buyers => break,
            _ if std::time::Instant::now() > deadline => {
                anyhow::bail!("scoring did not catch up with the demo data: {fit:?}")
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
    // Churn reasons use feedback, which scoring follows on its own: score
    // again until the demo's detractors carry their DETRACTOR reason.
    let mut campaign = CampaignServiceClient::new(channel);
    for _ in 0..20 {
        let mut progress = scoring
            .recompute_scores(spb::RecomputeScoresRequest { as_of })
            .await?
            .into_inner();
        while progress.message().await?.is_some() {}
        let detractors: Vec<String> = campaign
            .preview_segment(cpb::PreviewSegmentRequest {
                expression: r#"feedback.nps_category = "detractor" and purchases > 0"#.into(),
                sample_size: 20,
            })
            .await?
            .into_inner()
            .sample
            .into_iter()
            .map(|t| t.customer_id)
            .collect();
        let scores = scoring
            .batch_get_scores(spb::BatchGetScoresRequest {
                customer_ids: detractors.clone(),
            })
            .await?
            .into_inner()
            .scores;
        let explained = scores.iter().all(|s| {
            s.churn
                .as_ref()
                .is_some_and(|c| c.reasons.iter().any(|r| r == "DETRACTOR"))
        });
        if !detractors.is_empty() && explained {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    for (name, expression, description) in DEMO_SEGMENTS {
        campaign
            .create_segment(cpb::CreateSegmentRequest {
                segment: Some(cpb::Segment {
                    display_name: (*name).into(),
                    expression: (*expression).into(),
                    description: (*description).into(),
                    ..Default::default()
                }),
            })
            .await?;
    }
    Ok(())
}
