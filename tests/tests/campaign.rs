//! The campaign service end to end: segment rules select what an
//! independent evaluation over profile data and BatchGetScores selects;
//! bad rules are rejected with positions; target lists are consistent
//! snapshots honouring consent; live membership; campaigns with control
//! groups and their reports; cross-sell suggestions.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{Datelike, NaiveDate, Utc};
use futures::StreamExt;
use patron_domain::campaign::{Arm, assign_arm};
use patron_tests::{
    TestApp, backend_tests,
    pb::{
        campaign as pb,
        common::{MarketingConsent, Money},
        google::r#type::Date,
        profile as profile_pb, scoring as scoring_pb,
    },
    violated_fields,
};
use prost_types::{FieldMask, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tonic::Code;

const REGIONS: [&str; 3] = ["East", "West", "North"];
const CATEGORIES: [&str; 4] = ["books", "music", "toys", "garden"];

/// A generated customer and what the test knows about them independently.
#[derive(Debug, Clone)]
struct Person {
    external_id: String,
    region: &'static str,
    tags: Vec<String>,
    email: bool,
    sms: bool,
    birth: Option<NaiveDate>,
    /// (UTC day, category) of each purchase.
    purchases: Vec<(i64, &'static str)>,
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn day_number(d: NaiveDate) -> i64 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days()
}

/// Days to the next birthday (0 today); 29 February counts as 28 February.
fn days_to_birthday(birth: NaiveDate, today: NaiveDate) -> i64 {
    let on = |y: i32| {
        NaiveDate::from_ymd_opt(y, birth.month(), birth.day())
            .or_else(|| NaiveDate::from_ymd_opt(y, birth.month(), birth.day() - 1))
            .unwrap()
    };
    let this = on(today.year());
    let next = if this >= today {
        this
    } else {
        on(today.year() + 1)
    };
    (next - today).num_days()
}

fn people(n: usize, seed: u64) -> Vec<Person> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let now = day_number(today());
    (0..n)
        .map(|i| {
            let mut tags = Vec::new();
            if rng.random_bool(0.2) {
                tags.push("vip".to_owned());
            }
            if rng.random_bool(0.3) {
                tags.push("gold".to_owned());
            }
            // Birthdays spread over the coming weeks and the past year.
            let birth = rng.random_bool(0.8).then(|| {
                let offset = rng.random_range(-300..40);
                let d = today() + chrono::Duration::days(offset);
                NaiveDate::from_ymd_opt(rng.random_range(1950..2004), d.month(), d.day().min(28))
                    .unwrap()
            });
            // Buy-till-you-die purchases (what BG/NBD assumes), one in five
            // customers without any.
            let mut purchases = Vec::new();
            if rng.random_bool(0.8) {
                let rate: f64 = rng.random_range(0.01..0.08);
                let drop: f64 = rng.random_range(0.05..0.5);
                let mut day = now - rng.random_range(100..700);
                loop {
                    purchases.push((day, CATEGORIES[rng.random_range(0..4)]));
                    if rng.random_bool(drop) {
                        break;
                    }
                    day += (-rng.random::<f64>().max(1e-9).ln() / rate).ceil() as i64;
                    if day >= now {
                        break;
                    }
                }
            }
            // Music goes with books more often than chance.
            if let Some(&(day, _)) = purchases.iter().find(|p| p.1 == "books")
                && rng.random_bool(0.6)
            {
                purchases.push((day, "music"));
            }
            Person {
                external_id: format!("cmp-{seed}-{i}"),
                region: REGIONS[rng.random_range(0..3)],
                tags,
                email: rng.random_bool(0.7),
                sms: rng.random_bool(0.3),
                birth,
                purchases,
            }
        })
        .collect()
}

fn to_customer(p: &Person) -> profile_pb::Customer {
    profile_pb::Customer {
        external_id: p.external_id.clone(),
        display_name: format!("Customer {}", p.external_id),
        email: format!("{}@example.com", p.external_id),
        region: p.region.into(),
        tags: p.tags.clone(),
        birth_date: p.birth.map(|d| Date {
            year: d.year(),
            month: d.month() as i32,
            day: d.day() as i32,
        }),
        marketing_consent: Some(MarketingConsent {
            email: p.email,
            sms: p.sms,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the people and their purchases; returns their customer ids.
async fn ingest(app: &TestApp, people: &[Person]) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in people.chunks(1_000) {
        let stored = app
            .profile()
            .upsert_customers(profile_pb::UpsertCustomersRequest {
                customers: chunk.iter().map(to_customer).collect(),
            })
            .await
            .expect("upsert")
            .into_inner()
            .customers;
        ids.extend(stored.into_iter().map(|c| c.id));
    }
    let transactions: Vec<profile_pb::Transaction> = people
        .iter()
        .zip(&ids)
        .flat_map(|(p, id)| {
            p.purchases
                .iter()
                .enumerate()
                .map(move |(k, (day, category))| profile_pb::Transaction {
                    id: format!("{}-t{k}", p.external_id),
                    customer_id: id.clone(),
                    occurred_at: Some(Timestamp {
                        seconds: day * 86_400 + 43_200,
                        nanos: 0,
                    }),
                    amount: Some(Money {
                        currency_code: "EUR".into(),
                        units: 20 + k as i64 * 7,
                        nanos: 0,
                    }),
                    category: (*category).into(),
                    quantity: 1,
                    ..Default::default()
                })
        })
        .collect();
    for chunk in transactions.chunks(5_000) {
        app.profile()
            .record_transactions(profile_pb::RecordTransactionsRequest {
                transactions: chunk.to_vec(),
            })
            .await
            .expect("record");
    }
    ids
}

async fn preview_count(app: &TestApp, expression: &str) -> i64 {
    app.campaign()
        .preview_segment(pb::PreviewSegmentRequest {
            expression: expression.into(),
            sample_size: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
        .into_inner()
        .count
}

/// Waits until `expression` selects `want` customers.
async fn wait_for_count(app: &TestApp, expression: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = preview_count(app, expression).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{expression}: {got} selected, waiting for {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until campaign's view has every change profile made so far: a
/// marker customer written last is visible (the feed is ordered).
async fn wait_for_view(app: &TestApp) {
    let marker = format!("marker-{}", uuid::Uuid::now_v7());
    app.profile()
        .create_customer(profile_pb::CreateCustomerRequest {
            customer: Some(profile_pb::Customer {
                external_id: marker.clone(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap();
    wait_for_count(app, &format!("customer.external_id = \"{marker}\""), 1).await;
}

async fn targets(app: &TestApp, req: pb::StreamTargetsRequest) -> Vec<pb::Target> {
    let mut stream = app
        .campaign()
        .stream_targets(req)
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        assert!(!m.targets.is_empty() && m.targets.len() <= 1_000);
        out.extend(m.targets);
    }
    out
}

fn id_set(targets: &[pb::Target]) -> HashSet<String> {
    let set: HashSet<String> = targets.iter().map(|t| t.customer_id.clone()).collect();
    assert_eq!(set.len(), targets.len(), "every customer exactly once");
    set
}

/// Fits the model on what scoring has seen and recomputes every score.
async fn score_everyone(app: &TestApp, buyers: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let fit = app
            .scoring()
            .fit_model(scoring_pb::FitModelRequest::default())
            .await;
        if fit.as_ref().is_ok_and(|f| f.get_ref().customers >= buyers) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "scoring's read model did not catch up: {fit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut progress = app
        .scoring()
        .recompute_scores(scoring_pb::RecomputeScoresRequest::default())
        .await
        .unwrap()
        .into_inner();
    while progress.message().await.unwrap().is_some() {}
}

async fn create_segment(app: &TestApp, name: &str, expression: &str) -> pb::Segment {
    app.campaign()
        .create_segment(pb::CreateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: name.into(),
                expression: expression.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
        .into_inner()
}

/// The revisions `StreamCustomerSummaries` sends after `after`.
async fn summary_revisions(app: &TestApp, after: i64) -> Vec<i64> {
    let mut stream = app
        .feedback()
        .stream_customer_summaries(patron_tests::pb::feedback::StreamCustomerSummariesRequest {
            after_revision: after,
        })
        .await
        .unwrap()
        .into_inner();
    let mut revisions = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        revisions.extend(m.revisions);
    }
    revisions
}

/// The revisions `StreamScores` sends after `after`.
async fn score_revisions(app: &TestApp, after: i64) -> Vec<i64> {
    let mut stream = app
        .scoring()
        .stream_scores(scoring_pb::StreamScoresRequest {
            after_revision: after,
        })
        .await
        .unwrap()
        .into_inner();
    let mut revisions = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        assert_eq!(m.scores.len(), m.revisions.len());
        revisions.extend(m.revisions);
    }
    revisions
}

/// A follower passes the last revision it fully received: the stream then
/// sends only later revisions (not that one again: a full recompute is one
/// revision of every customer, re-sent on every sync before this was fixed).
async fn assert_resumes_after_whole_revisions<F, Fut>(all: &[i64], stream_after: F)
where
    F: Fn(i64) -> Fut,
    Fut: std::future::Future<Output = Vec<i64>>,
{
    let newest = *all.last().expect("some revisions");
    assert_eq!(
        stream_after(newest).await,
        Vec::<i64>::new(),
        "nothing after the newest"
    );
    let before = all.iter().rev().copied().find(|r| *r < newest).unwrap_or(0);
    let tail: Vec<i64> = all.iter().copied().filter(|r| *r > before).collect();
    assert_eq!(
        stream_after(before).await,
        tail,
        "exactly the revisions after {before}"
    );
}

backend_tests! {
    async fn segments_select_what_an_independent_evaluation_selects(app: TestApp) {
        let people = people(400, 11);
        let ids = ingest(&app, &people).await;
        let buyers = people.iter().filter(|p| !p.purchases.is_empty()).count() as i64;
        score_everyone(&app, buyers).await;
        let scores: HashMap<String, scoring_pb::CustomerScore> = app
            .scoring()
            .batch_get_scores(scoring_pb::BatchGetScoresRequest { customer_ids: ids.clone() })
            .await
            .unwrap()
            .into_inner()
            .scores
            .into_iter()
            .map(|s| (s.customer_id.clone(), s))
            .collect();
        assert_eq!(scores.len(), ids.len(), "buyers and prospects");
        let prospect = scoring_pb::LifecycleStage::Prospect as i32;
        for (id, p) in ids.iter().zip(&people) {
            assert_eq!(scores[id].lifecycle_stage == prospect, p.purchases.is_empty(), "{:?}", scores[id]);
        }
        // To rules, a prospect has a lifecycle stage and no purchase figures.
        let scores: HashMap<String, scoring_pb::CustomerScore> = scores.into_iter().filter(|(_, s)| s.lifecycle_stage != prospect).collect();
        assert_eq!(scores.len() as i64, buyers);
        // Campaign has every score once this many customers have one.
        wait_for_count(&app, "churn.probability >= 0", buyers).await;
        wait_for_view(&app).await;

        let now = today();
        let now_day = day_number(now);
        type Check = Box<dyn Fn(&Person, Option<&scoring_pb::CustomerScore>) -> bool>;
        let cases: Vec<(&str, Check)> = vec![
            (
                r#"rfm.segment in ("at_risk", "cant_lose_them", "hibernating", "about_to_sleep") and churn.probability > 0.3 and customer.region = "East""#,
                Box::new(|p, s| s.is_some_and(|s| {
                    ["at_risk", "cant_lose_them", "hibernating", "about_to_sleep"].contains(&s.rfm.as_ref().unwrap().segment.as_str())
                        && s.churn.as_ref().unwrap().probability > 0.3
                }) && p.region == "East"),
            ),
            (
                r#"has(customer.tags, "vip") or clv.historical_value >= 100"#,
                Box::new(|p, s| p.tags.iter().any(|t| t == "vip") || s.is_some_and(|s| {
                    let m = s.clv.as_ref().unwrap().historical_value.as_ref().unwrap();
                    m.units as f64 + f64::from(m.nanos) / 1e9 >= 100.0
                })),
            ),
            (
                r#"bought_category("books") and not bought_category("music")"#,
                Box::new(|p, _| p.purchases.iter().any(|x| x.1 == "books") && !p.purchases.iter().any(|x| x.1 == "music")),
            ),
            (
                "days_to_birthday <= 7",
                Box::new(move |p, _| p.birth.is_some_and(|b| days_to_birthday(b, now) <= 7)),
            ),
            // (The view's marker customers are prospects too, without a region.)
            ("lifecycle.stage = \"prospect\" and customer.region != \"\"", Box::new(|p, _| p.purchases.is_empty())),
            ("rfm.recency_days >= 0", Box::new(|_, s| s.is_some())),
            (
                "not consent.email and purchases >= 3",
                Box::new(|p, _| !p.email && p.purchases.len() >= 3),
            ),
            (
                "days_since_last_purchase > 200 and value.tier != \"low\"",
                Box::new(move |p, s| {
                    p.purchases.iter().map(|x| x.0).max().is_some_and(|last| now_day - last > 200)
                        && s.is_some_and(|s| s.value_tier != scoring_pb::ValueTier::Low as i32)
                }),
            ),
        ];
        let by_id: HashMap<&String, &Person> = ids.iter().zip(&people).collect();
        for (expression, check) in &cases {
            let want: HashSet<String> = ids
                .iter()
                .filter(|id| check(by_id[id], scores.get(*id)))
                .cloned()
                .collect();
            assert!(!want.is_empty() && want.len() < ids.len(), "{expression} selects {} of {}: not a discriminating case", want.len(), ids.len());
            let got = targets(&app, pb::StreamTargetsRequest { expression: (*expression).into(), ..Default::default() }).await;
            assert_eq!(id_set(&got), want, "{expression}");
            assert_eq!(preview_count(&app, expression).await, want.len() as i64, "{expression}");
            // With a channel, only customers with consent for it.
            let emailable = targets(&app, pb::StreamTargetsRequest { expression: (*expression).into(), channel: "email".into(), ..Default::default() }).await;
            let want_emailable: HashSet<String> = want.iter().filter(|id| by_id[id].email).cloned().collect();
            assert_eq!(id_set(&emailable), want_emailable, "{expression} with consent");
        }
        assert!(cases.iter().all(|c| !c.0.is_empty()));

        // Targets carry contact fields and the values the rule read.
        let got = targets(&app, pb::StreamTargetsRequest { expression: "churn.probability > 0.5 and customer.region = \"West\"".into(), ..Default::default() }).await;
        assert!(!got.is_empty());
        for t in &got {
            let p = by_id[&t.customer_id];
            assert_eq!(t.external_id, p.external_id);
            assert_eq!(t.email, format!("{}@example.com", p.external_id));
            assert_eq!(t.fields["customer.region"], "West");
            let probability: f64 = t.fields["churn.probability"].parse().unwrap();
            assert!((probability - scores[&t.customer_id].churn.as_ref().unwrap().probability).abs() < 1e-12);
        }

        // A stored segment streams the same as its expression.
        let segment = create_segment(&app, "Books, no music", r#"bought_category("books") and not bought_category("music")"#).await;
        assert_eq!(segment.fields, ["categories"]);
        let by_segment = targets(&app, pb::StreamTargetsRequest { segment_id: segment.id.clone(), ..Default::default() }).await;
        let by_expression = targets(&app, pb::StreamTargetsRequest { expression: segment.expression.clone(), ..Default::default() }).await;
        assert_eq!(id_set(&by_segment), id_set(&by_expression));

        // Preview samples are selected customers.
        let preview = app.campaign().preview_segment(pb::PreviewSegmentRequest { expression: "consent.sms".into(), sample_size: 5 }).await.unwrap().into_inner();
        assert_eq!(preview.count, people.iter().filter(|p| p.sms).count() as i64);
        assert_eq!(preview.sample.len(), 5);
        assert!(preview.sample.iter().all(|t| by_id[&t.customer_id].sms));

        // Erased customers are never selected again.
        let erased = ids.iter().find(|id| by_id[id].sms).unwrap().clone();
        app.profile().erase_customer(profile_pb::EraseCustomerRequest { id: erased.clone(), reason: "ticket-1".into() }).await.unwrap();
        wait_for_count(&app, "consent.sms", preview.count - 1).await;
        let sms = targets(&app, pb::StreamTargetsRequest { expression: "consent.sms or not consent.sms".into(), ..Default::default() }).await;
        assert!(!id_set(&sms).contains(&erased));
    }

    async fn bad_rules_and_requests_are_rejected_with_positions(app: TestApp) {
        let cases = [
            ("churn.probablity > 0.5", "line 1, column 1: unknown field `churn.probablity` (did you mean `churn.probability`?)"),
            ("customer.region = 5", "line 1, column 19: `customer.region` is a string, but this is a number"),
            ("purchases > 3 and\n(consent.email", "line 2, column 15: expected `)`"),
            ("rfm.segment = \"vip\"", "line 1, column 15: `rfm.segment` is never \"vip\""),
            ("purchases >", "line 1, column 12: expected a field or a value"),
            ("customer.tags = \"vip\"", "line 1, column 1: `customer.tags` is a list"),
        ];
        for (expression, message) in cases {
            let err = app
                .campaign()
                .create_segment(pb::CreateSegmentRequest {
                    segment: Some(pb::Segment { display_name: "x".into(), expression: expression.into(), ..Default::default() }),
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{expression}");
            assert_eq!(violated_fields(&err), ["segment.expression"], "{expression}");
            assert!(err.message().contains(message) || description(&err).starts_with(message), "{expression}: {:?}", description(&err));

            let err = app.campaign().preview_segment(pb::PreviewSegmentRequest { expression: expression.into(), sample_size: 0 }).await.unwrap_err();
            assert_eq!((err.code(), violated_fields(&err)), (Code::InvalidArgument, vec!["expression".to_owned()]));
        }
        let invalid = |r: Result<tonic::Response<tonic::Streaming<pb::StreamTargetsResponse>>, tonic::Status>| {
            let e = r.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            violated_fields(&e)
        };
        assert_eq!(invalid(app.campaign().stream_targets(pb::StreamTargetsRequest::default()).await), ["segment_id"]);
        assert_eq!(invalid(app.campaign().stream_targets(pb::StreamTargetsRequest { expression: "consent.email".into(), channel: "fax".into(), ..Default::default() }).await), ["channel"]);
        assert_eq!(invalid(app.campaign().stream_targets(pb::StreamTargetsRequest { expression: "consent.email".into(), segment_id: "s".into(), ..Default::default() }).await), ["expression"]);
        let err = app.campaign().stream_targets(pb::StreamTargetsRequest { segment_id: "nope".into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = app.campaign().get_segment(pb::GetSegmentRequest { id: "nope".into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = app.campaign().preview_segment(pb::PreviewSegmentRequest { expression: "true".into(), sample_size: 101 }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["sample_size"]);

        // Segment CRUD with etags and masks.
        let s = create_segment(&app, "VIP", "has(customer.tags, \"vip\")").await;
        assert_eq!(s.etag, "\"1\"");
        let mut edit = s.clone();
        edit.expression = "has(customer.tags, \"gold\")".into();
        edit.display_name = "ignored".into();
        let updated = app.campaign().update_segment(pb::UpdateSegmentRequest {
            segment: Some(edit.clone()),
            update_mask: Some(FieldMask { paths: vec!["expression".into()] }),
        }).await.unwrap().into_inner();
        assert_eq!((updated.display_name.as_str(), updated.expression.as_str(), updated.etag.as_str()), ("VIP", "has(customer.tags, \"gold\")", "\"2\""));
        let err = app.campaign().update_segment(pb::UpdateSegmentRequest { segment: Some(edit.clone()), update_mask: None }).await.unwrap_err();
        assert_eq!(err.code(), Code::Aborted, "stale etag");
        edit.etag = updated.etag.clone();
        edit.expression = "has(".into();
        let err = app.campaign().update_segment(pb::UpdateSegmentRequest { segment: Some(edit.clone()), update_mask: None }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["segment.expression"]);
        let err = app.campaign().update_segment(pb::UpdateSegmentRequest { segment: Some(edit.clone()), update_mask: Some(FieldMask { paths: vec!["id".into()] }) }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["update_mask"]);
        // No mask: the fields sent change, the others stay (AIP-134).
        let rule_only = pb::Segment { id: edit.id.clone(), etag: edit.etag.clone(), expression: "has(customer.tags, \"silver\")".into(), ..Default::default() };
        let updated = app.campaign().update_segment(pb::UpdateSegmentRequest { segment: Some(rule_only), update_mask: None }).await.unwrap().into_inner();
        assert_eq!((updated.display_name.as_str(), updated.expression.as_str()), ("VIP", "has(customer.tags, \"silver\")"));
        let listed = app.campaign().list_segments(pb::ListSegmentsRequest { page_size: 1, page_token: String::new() }).await.unwrap().into_inner();
        assert_eq!(listed.segments.len(), 1);
        assert!(listed.next_page_token.is_empty());
        // The streams campaign follows reject a negative revision.
        let err = app.scoring().stream_scores(scoring_pb::StreamScoresRequest { after_revision: -1 }).await.unwrap_err();
        assert_eq!((err.code(), violated_fields(&err)), (Code::InvalidArgument, vec!["after_revision".to_owned()]));
        let err = app.feedback().stream_customer_summaries(patron_tests::pb::feedback::StreamCustomerSummariesRequest { after_revision: -1 }).await.unwrap_err();
        assert_eq!((err.code(), violated_fields(&err)), (Code::InvalidArgument, vec!["after_revision".to_owned()]));
        app.campaign().delete_segment(pb::DeleteSegmentRequest { id: s.id.clone() }).await.unwrap();
        let err = app.campaign().delete_segment(pb::DeleteSegmentRequest { id: s.id.clone() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }

    async fn campaigns_freeze_disjoint_arms_and_report_uplift(app: TestApp) {
        let people = people(1_500, 21);
        let ids = ingest(&app, &people).await;
        wait_for_view(&app).await;
        let segment = create_segment(&app, "East", "customer.region = \"East\"").await;
        let by_id: HashMap<&String, &Person> = ids.iter().zip(&people).collect();
        let audience: HashSet<String> = ids.iter().filter(|id| by_id[id].region == "East" && by_id[id].email).cloned().collect();

        let new_campaign = |fraction: f64, request_id: &str| pb::CreateCampaignRequest {
            campaign: Some(pb::Campaign {
                display_name: "Spring retention".into(),
                kind: pb::CampaignKind::Retention as i32,
                segment_id: segment.id.clone(),
                channel: "email".into(),
                control_fraction: fraction,
                ..Default::default()
            }),
            request_id: request_id.into(),
        };
        for (fraction, field) in [(1.0, "campaign.control_fraction"), (-0.1, "campaign.control_fraction")] {
            let err = app.campaign().create_campaign(new_campaign(fraction, "")).await.unwrap_err();
            assert_eq!(violated_fields(&err), [field]);
        }
        let mut bad = new_campaign(0.3, "");
        bad.campaign.as_mut().unwrap().channel = "fax".into();
        bad.campaign.as_mut().unwrap().kind = 0;
        let err = app.campaign().create_campaign(bad).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["campaign.kind", "campaign.channel"]);
        let mut bad = new_campaign(0.3, "");
        bad.campaign.as_mut().unwrap().segment_id = "missing".into();
        assert_eq!(violated_fields(&app.campaign().create_campaign(bad).await.unwrap_err()), ["campaign.segment_id"]);

        let c = app.campaign().create_campaign(new_campaign(0.3, "req-1")).await.unwrap().into_inner();
        let again = app.campaign().create_campaign(new_campaign(0.3, "req-1")).await.unwrap().into_inner();
        assert_eq!(again.id, c.id, "a retry returns the first result");
        assert_eq!(c.state, pb::CampaignState::Draft as i32);
        let err = app.campaign().complete_campaign(pb::CompleteCampaignRequest { id: c.id.clone() }).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let err = app.campaign().get_campaign_report(pb::GetCampaignReportRequest { campaign_id: c.id.clone() }).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let err = app.campaign().delete_segment(pb::DeleteSegmentRequest { id: segment.id.clone() }).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "a draft campaign uses the segment");

        let launched = app.campaign().launch_campaign(pb::LaunchCampaignRequest { id: c.id.clone() }).await.unwrap().into_inner();
        assert_eq!(launched.state, pb::CampaignState::Launched as i32);
        assert_eq!(launched.treatment_size + launched.control_size, audience.len() as i64);
        let err = app.campaign().launch_campaign(pb::LaunchCampaignRequest { id: c.id.clone() }).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);

        let arm = |arm: pb::Arm| {
            let app = &app;
            let id = c.id.clone();
            async move {
                let mut s = app.campaign().stream_campaign_audience(pb::StreamCampaignAudienceRequest { campaign_id: id, arm: arm as i32 }).await.unwrap().into_inner();
                let mut out = Vec::new();
                while let Some(m) = s.message().await.unwrap() {
                    out.extend(m.targets);
                }
                out
            }
        };
        let treatment = id_set(&arm(pb::Arm::Treatment).await);
        let control = id_set(&arm(pb::Arm::Control).await);
        assert!(treatment.is_disjoint(&control));
        assert_eq!(treatment.union(&control).cloned().collect::<HashSet<_>>(), audience);
        assert_eq!(control.len() as i64, launched.control_size);
        // Assignment is the documented function of (campaign id, customer id).
        assert!(control.iter().all(|id| assign_arm(&c.id, id, 0.3) == Arm::Control));
        // Control share within 4 standard errors of 0.3.
        let n = audience.len() as f64;
        let share = control.len() as f64 / n;
        assert!((share - 0.3).abs() < 4.0 * (0.3f64 * 0.7 / n).sqrt(), "{share}");
        let err = app.campaign().stream_campaign_audience(pb::StreamCampaignAudienceRequest { campaign_id: c.id.clone(), arm: 0 }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["arm"]);

        // Responses: conversions in both arms, idempotent by id.
        let treatment: Vec<String> = { let mut v: Vec<_> = treatment.into_iter().collect(); v.sort(); v };
        let control: Vec<String> = { let mut v: Vec<_> = control.into_iter().collect(); v.sort(); v };
        let response = |id: String, customer: &String, kind: pb::ResponseKind, euros: i64| pb::CampaignResponse {
            id,
            customer_id: customer.clone(),
            kind: kind as i32,
            revenue: (euros > 0).then(|| Money { currency_code: "EUR".into(), units: euros, nanos: 0 }),
            occurred_at: None,
        };
        let mut responses = Vec::new();
        let t_conv: Vec<&String> = treatment.iter().step_by(4).collect();
        let c_conv: Vec<&String> = control.iter().step_by(8).collect();
        for (i, id) in t_conv.iter().enumerate() {
            responses.push(response(format!("t-{i}"), id, pb::ResponseKind::Converted, 30));
            responses.push(response(format!("t-open-{i}"), id, pb::ResponseKind::Opened, 0));
        }
        // A second conversion of one customer counts once.
        responses.push(response("t-again".into(), t_conv[0], pb::ResponseKind::Converted, 10));
        for (i, id) in c_conv.iter().enumerate() {
            responses.push(response(format!("c-{i}"), id, pb::ResponseKind::Converted, 20));
        }
        let recorded = app.campaign().record_responses(pb::RecordResponsesRequest { campaign_id: c.id.clone(), responses: responses.clone() }).await.unwrap().into_inner();
        assert_eq!((recorded.accepted as usize, recorded.duplicates), (responses.len(), 0));
        let replay = app.campaign().record_responses(pb::RecordResponsesRequest { campaign_id: c.id.clone(), responses: responses.clone() }).await.unwrap().into_inner();
        assert_eq!((replay.accepted, replay.duplicates as usize), (0, responses.len()));
        let outsider = ids.iter().find(|id| !audience.contains(*id)).unwrap();
        let err = app.campaign().record_responses(pb::RecordResponsesRequest {
            campaign_id: c.id.clone(),
            responses: vec![response("x-1".into(), &treatment[1], pb::ResponseKind::Converted, 5), response("x-2".into(), outsider, pb::ResponseKind::Converted, 5)],
        }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["responses[1].customer_id"]);
        let mut usd = response("x-3".into(), &treatment[1], pb::ResponseKind::Converted, 5);
        usd.revenue.as_mut().unwrap().currency_code = "USD".into();
        let err = app.campaign().record_responses(pb::RecordResponsesRequest { campaign_id: c.id.clone(), responses: vec![usd] }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["responses[0].revenue.currency_code"]);

        let report = app.campaign().get_campaign_report(pb::GetCampaignReportRequest { campaign_id: c.id.clone() }).await.unwrap().into_inner();
        let (t, k) = (report.treatment.unwrap(), report.control.unwrap());
        let (nt, nc) = (treatment.len() as f64, control.len() as f64);
        let (pt, pc) = (t_conv.len() as f64 / nt, c_conv.len() as f64 / nc);
        assert_eq!((t.audience, t.converted), (treatment.len() as i64, t_conv.len() as i64));
        assert_eq!((k.audience, k.converted), (control.len() as i64, c_conv.len() as i64));
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(t.conversion_rate, pt) && close(k.conversion_rate, pc));
        assert!(close(report.uplift, pt - pc));
        let se = (pt * (1.0 - pt) / nt + pc * (1.0 - pc) / nc).sqrt();
        assert!(close(report.uplift_ci_low, pt - pc - 1.959_963_984_540_054 * se));
        assert!(close(report.uplift_ci_high, pt - pc + 1.959_963_984_540_054 * se));
        assert!(close(report.relative_uplift, (pt - pc) / pc));
        let t_revenue = t_conv.len() as f64 * 30.0 + 10.0;
        let c_revenue = c_conv.len() as f64 * 20.0;
        assert_eq!(t.revenue.as_ref().unwrap().units as f64, t_revenue);
        assert_eq!(k.revenue.as_ref().unwrap().units as f64, c_revenue);
        let incremental = report.incremental_revenue.unwrap();
        let want = (t_revenue / nt - c_revenue / nc) * nt;
        assert!((incremental.units as f64 + f64::from(incremental.nanos) / 1e9 - want).abs() < 1e-6, "{incremental:?} vs {want}");

        // Consent is honoured at send time: a withdrawal leaves the stream.
        let withdrawn = treatment[0].clone();
        app.profile().update_customer(profile_pb::UpdateCustomerRequest {
            customer: Some(profile_pb::Customer { id: withdrawn.clone(), marketing_consent: Some(MarketingConsent::default()), ..Default::default() }),
            update_mask: Some(FieldMask { paths: vec!["marketing_consent".into()] }),
        }).await.unwrap();
        wait_for_view(&app).await;
        let now_treated = id_set(&arm(pb::Arm::Treatment).await);
        assert_eq!(now_treated.len(), treatment.len() - 1);
        assert!(!now_treated.contains(&withdrawn));

        let done = app.campaign().complete_campaign(pb::CompleteCampaignRequest { id: c.id.clone() }).await.unwrap().into_inner();
        assert_eq!(done.state, pb::CampaignState::Completed as i32);
        assert!(done.complete_time.is_some());
        let err = app.campaign().complete_campaign(pb::CompleteCampaignRequest { id: c.id.clone() }).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        let listed = app.campaign().list_campaigns(pb::ListCampaignsRequest::default()).await.unwrap().into_inner();
        assert_eq!(listed.campaigns.len(), 1);
        let err = app.campaign().get_campaign(pb::GetCampaignRequest { id: "nope".into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        // Without a channel there is no consent filter (as for StreamTargets):
        // every East customer, the one who withdrew consent included.
        let mut care = new_campaign(0.0, "");
        care.campaign.as_mut().unwrap().channel = String::new();
        care.campaign.as_mut().unwrap().kind = pb::CampaignKind::Care as i32;
        let care = app.campaign().create_campaign(care).await.unwrap().into_inner();
        let launched = app.campaign().launch_campaign(pb::LaunchCampaignRequest { id: care.id.clone() }).await.unwrap().into_inner();
        let east = ids.iter().filter(|id| by_id[id].region == "East").count() as i64;
        assert_eq!((launched.treatment_size, launched.control_size), (east, 0));
        assert!(east > audience.len() as i64, "some East customers have no email consent");
    }

    async fn watch_segment_streams_membership_changes(app: TestApp) {
        let people = people(30, 31);
        let ids = ingest(&app, &people).await;
        wait_for_view(&app).await;
        let segment = create_segment(&app, "VIP", "has(customer.tags, \"vip\")").await;
        let vips: HashSet<String> = ids.iter().zip(&people).filter(|(_, p)| p.tags.iter().any(|t| t == "vip")).map(|(id, _)| id.clone()).collect();

        let mut watch = app.campaign().watch_segment(pb::WatchSegmentRequest { segment_id: segment.id.clone(), after_watermark: String::new() }).await.unwrap().into_inner();
        let mut entered = HashSet::new();
        let mut watermark = String::new();
        while entered.len() < vips.len() {
            let m = tokio::time::timeout(Duration::from_secs(30), watch.message()).await.expect("initial members").unwrap().unwrap();
            for c in m.changes {
                assert_eq!(c.change, pb::MembershipChange::Entered as i32);
                entered.insert(c.customer_id);
                watermark = c.watermark;
            }
        }
        assert_eq!(entered, vips);

        // A new VIP enters, a VIP who loses the tag leaves, an erased VIP leaves.
        let newcomer = ids.iter().find(|id| !vips.contains(*id)).unwrap().clone();
        let mut sorted: Vec<&String> = vips.iter().collect();
        sorted.sort();
        let (demoted, erased) = (sorted[0].clone(), sorted[1].clone());
        let set_tags = |id: String, tags: Vec<String>| profile_pb::UpdateCustomerRequest {
            customer: Some(profile_pb::Customer { id, tags, ..Default::default() }),
            update_mask: Some(FieldMask { paths: vec!["tags".into()] }),
        };
        app.profile().update_customer(set_tags(newcomer.clone(), vec!["vip".into()])).await.unwrap();
        app.profile().update_customer(set_tags(demoted.clone(), vec![])).await.unwrap();
        app.profile().erase_customer(profile_pb::EraseCustomerRequest { id: erased.clone(), reason: "ticket-2".into() }).await.unwrap();
        let mut changes = HashMap::new();
        while changes.len() < 3 {
            let m = tokio::time::timeout(Duration::from_secs(30), watch.message()).await.expect("live changes").unwrap().unwrap();
            for c in m.changes {
                changes.insert(c.customer_id.clone(), c.change);
            }
        }
        let want: HashMap<String, i32> = [
            (newcomer.clone(), pb::MembershipChange::Entered as i32),
            (demoted.clone(), pb::MembershipChange::Left as i32),
            (erased.clone(), pb::MembershipChange::Left as i32),
        ].into_iter().collect();
        assert_eq!(changes, want);
        drop(watch);

        // Resuming from the watermark after the initial members replays the changes only.
        let mut resumed = app.campaign().watch_segment(pb::WatchSegmentRequest { segment_id: segment.id.clone(), after_watermark: watermark }).await.unwrap().into_inner();
        let mut replay = HashMap::new();
        while replay.len() < 3 {
            let m = tokio::time::timeout(Duration::from_secs(30), resumed.message()).await.expect("replay").unwrap().unwrap();
            for c in m.changes {
                replay.insert(c.customer_id.clone(), c.change);
            }
        }
        assert_eq!(replay, want);

        let err = app.campaign().watch_segment(pb::WatchSegmentRequest { segment_id: segment.id.clone(), after_watermark: "abc".into() }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["after_watermark"]);
        let err = app.campaign().watch_segment(pb::WatchSegmentRequest { segment_id: segment.id.clone(), after_watermark: "999999".into() }).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["after_watermark"]);

        // History: the member count over time ends at the current count.
        let history = app.campaign().get_segment_history(pb::GetSegmentHistoryRequest { segment_id: segment.id.clone(), ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(history.counts.last().unwrap().members, vips.len() as i64 - 1);
        assert_eq!(history.counts.first().unwrap().members, vips.len() as i64);
    }

    async fn the_rows_changed_since_a_revision_are_read_once_each_in_pages(app: TestApp) {
        // What the mirror and the watcher read every second, at the store:
        // the rows changed after a revision, page by page along the
        // (revision, customer id) index, across several revisions.
        use patron_store::{Storage, campaign::CampaignStore};
        // No purchases: nothing else (scores) changes rows meanwhile.
        let people: Vec<Person> = people(60, 51).into_iter().map(|mut p| { p.purchases.clear(); p }).collect();
        let ids = ingest(&app, &people).await;
        wait_for_view(&app).await;
        let storage = Storage::connect_lazy(&app.settings.database).await.unwrap();
        let store = CampaignStore::new(&storage);
        let changed_since = |since: i64, limit: u64| {
            let store = store.clone();
            async move {
                let snapshot = store.snapshot().await.unwrap();
                let (mut seen, mut after) = (Vec::new(), None);
                loop {
                    let (page, next) = snapshot.changed_page(since, after.as_ref(), limit).await.unwrap();
                    assert!(page.len() as u64 <= limit);
                    seen.extend(page.into_iter().map(|r| r.record.customer_id));
                    match next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                snapshot.close().await;
                seen
            }
        };
        let before = store.view_revision().await.unwrap();
        assert_eq!(changed_since(before, 4).await, Vec::<String>::new(), "nothing changed since the head");

        // 25 customers change, in five separate writes (five revisions or more).
        let changed: Vec<String> = ids.iter().step_by(2).take(25).cloned().collect();
        for chunk in changed.chunks(5) {
            for id in chunk {
                app.profile().update_customer(profile_pb::UpdateCustomerRequest {
                    customer: Some(profile_pb::Customer { id: id.clone(), tags: vec!["moved".into()], ..Default::default() }),
                    update_mask: Some(FieldMask { paths: vec!["tags".into()] }),
                }).await.unwrap();
            }
            wait_for_view(&app).await;
        }
        let markers = 5; // wait_for_view writes a marker customer each time
        for limit in [1, 3, 4, 1_000] {
            let mut seen = changed_since(before, limit).await;
            assert_eq!(seen.len(), changed.len() + markers, "each changed row once (limit {limit})");
            seen.retain(|id| changed.contains(id));
            seen.sort();
            let mut want = changed.clone();
            want.sort();
            assert_eq!(seen, want, "limit {limit}");
        }
        let everything = changed_since(-1, 7).await;
        assert_eq!(everything.iter().collect::<HashSet<_>>().len(), everything.len(), "no row twice");
        assert!(ids.iter().all(|id| everything.contains(id)));
    }

    async fn target_lists_are_consistent_snapshots(app: TestApp) {
        let n = 6_000;
        let people: Vec<Person> = people(n, 41).into_iter().map(|mut p| { p.region = "East"; p }).collect();
        let ids = ingest(&app, &people).await;
        wait_for_count(&app, "customer.region = \"East\"", n as i64).await;
        let mut stream = app.campaign().stream_targets(pb::StreamTargetsRequest { expression: "customer.region = \"East\"".into(), ..Default::default() }).await.unwrap().into_inner();
        let first = stream.message().await.unwrap().unwrap();
        // The list moves while it streams: customers leave the segment.
        let moves: Vec<profile_pb::Customer> = people.iter().map(|p| profile_pb::Customer { region: "West".into(), ..to_customer(p) }).collect();
        for chunk in moves.chunks(1_000) {
            app.profile().upsert_customers(profile_pb::UpsertCustomersRequest { customers: chunk.to_vec() }).await.unwrap();
        }
        wait_for_count(&app, "customer.region = \"West\"", n as i64).await;
        let mut got = first.targets;
        while let Some(m) = stream.next().await {
            got.extend(m.unwrap().targets);
        }
        // Every customer exactly once, as they were when the list started.
        assert_eq!(id_set(&got), ids.iter().cloned().collect::<HashSet<_>>());
        assert!(got.iter().all(|t| t.fields["customer.region"] == "East"));
    }

    async fn feedback_summaries_reach_segment_rules(app: TestApp) {
        use patron_tests::pb::feedback as fpb;
        let people = people(400, 51);
        let ids = ingest(&app, &people).await;
        let mut nps: HashMap<String, i32> = HashMap::new();
        let mut responses = Vec::new();
        for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            // An older answer first: only the latest counts.
            for (k, (score, day)) in [((i % 4) as i32 + 6, "2026-01-01"), (((i * 7) % 11) as i32, "2026-02-01")].into_iter().enumerate() {
                responses.push(fpb::SurveyResponse {
                    id: format!("nps-{i}-{k}"),
                    customer_id: id.clone(),
                    kind: fpb::SurveyKind::Nps as i32,
                    score,
                    occurred_at: Some(Timestamp { seconds: NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp(), nanos: 0 }),
                    ..Default::default()
                });
                nps.insert(id.clone(), score);
            }
        }
        app.feedback().submit_survey_responses(fpb::SubmitSurveyResponsesRequest { responses }).await.unwrap();
        let complainers: HashSet<String> = ids.iter().step_by(7).cloned().collect();
        for id in &complainers {
            app.feedback().file_complaint(fpb::FileComplaintRequest {
                complaint: Some(fpb::Complaint {
                    customer_id: id.clone(),
                    r#type: "delivery".into(),
                    severity: fpb::ComplaintSeverity::Medium as i32,
                    description: "late".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            }).await.unwrap();
        }
        // Feedback's summary stream: every customer with feedback once per
        // change, revisions in order, the latest answer winning.
        let mut stream = app.feedback().stream_customer_summaries(fpb::StreamCustomerSummariesRequest { after_revision: 0 }).await.unwrap().into_inner();
        let (mut latest, mut revisions) = (HashMap::new(), Vec::new());
        while let Some(m) = stream.message().await.unwrap() {
            assert_eq!(m.summaries.len(), m.revisions.len());
            revisions.extend(m.revisions);
            for summary in m.summaries {
                latest.insert(summary.customer_id.clone(), summary);
            }
        }
        assert!(revisions.windows(2).all(|w| w[0] <= w[1]));
        assert_resumes_after_whole_revisions(&revisions, |after| summary_revisions(&app, after)).await;
        assert_eq!(latest.len(), nps.keys().chain(complainers.iter()).collect::<HashSet<_>>().len());
        for (id, score) in &nps {
            assert_eq!(latest[id].latest_nps, Some(*score));
        }
        for id in &complainers {
            assert_eq!(latest[id].open_complaints, 1);
        }
        wait_for_count(&app, "feedback.open_complaints > 0", complainers.len() as i64).await;
        wait_for_count(&app, "feedback.nps >= 0", nps.len() as i64).await;
        let rule = "feedback.nps_category = \"detractor\" or feedback.open_complaints >= 1";
        let want: HashSet<String> = ids.iter().filter(|id| nps.get(*id).is_some_and(|s| *s <= 6) || complainers.contains(*id)).cloned().collect();
        assert!(!want.is_empty() && want.len() < ids.len());
        let got = targets(&app, pb::StreamTargetsRequest { expression: rule.into(), ..Default::default() }).await;
        assert_eq!(id_set(&got), want);
        let promoters = preview_count(&app, "feedback.nps_category = \"promoter\"").await;
        assert_eq!(promoters, nps.values().filter(|s| **s >= 9).count() as i64);
        assert_eq!(preview_count(&app, "feedback.csat >= 1").await, 0, "nobody answered CSAT");

        // Scoring follows the same summaries: churn reasons name detractors,
        // and complaints open for 14 days or more (scored as of 20 days ahead).
        let buyers = people.iter().filter(|p| !p.purchases.is_empty()).count() as i64;
        score_everyone(&app, buyers).await;
        let all = score_revisions(&app, 0).await;
        assert_eq!(all.len(), ids.len(), "buyers and prospects");
        assert_resumes_after_whole_revisions(&all, |after| score_revisions(&app, after)).await;
        let ahead = Timestamp { seconds: Utc::now().timestamp() + 20 * 86_400, nanos: 0 };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut progress = app.scoring().recompute_scores(scoring_pb::RecomputeScoresRequest { as_of: Some(ahead) }).await.unwrap().into_inner();
            while progress.message().await.unwrap().is_some() {}
            let scores = app.scoring().batch_get_scores(scoring_pb::BatchGetScoresRequest { customer_ids: ids.clone() }).await.unwrap().into_inner().scores;
            let mismatches: Vec<&String> = scores
                .iter()
                // A prospect is not a customer who could churn yet.
                .filter(|s| s.lifecycle_stage != scoring_pb::LifecycleStage::Prospect as i32)
                .filter(|s| {
                    let reasons = &s.churn.as_ref().unwrap().reasons;
                    let detractor = nps.get(&s.customer_id).is_some_and(|n| *n <= 6);
                    let complained = complainers.contains(&s.customer_id);
                    reasons.iter().any(|r| r == "DETRACTOR") != detractor || reasons.iter().any(|r| r == "OPEN_COMPLAINT") != complained
                })
                .map(|s| &s.customer_id)
                .collect();
            if mismatches.is_empty() {
                assert!(scores.iter().any(|s| s.churn.as_ref().unwrap().reasons.iter().any(|r| r == "DETRACTOR")));
                assert!(scores.iter().any(|s| s.churn.as_ref().unwrap().reasons.iter().any(|r| r == "OPEN_COMPLAINT")));
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "churn reasons disagree with feedback for {mismatches:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn cross_sell_suggests_high_lift_categories_not_bought(app: TestApp) {
        // Books buyers also buy music far more often than others do.
        let mut people = Vec::new();
        for i in 0..200 {
            let categories: &[&'static str] = match i % 10 {
                0..=3 => &["books", "music"],
                4 => &["books"],
                5..=6 => &["toys"],
                7 => &["toys", "garden"],
                _ => &["garden"],
            };
            people.push(Person {
                external_id: format!("xs-{i}"),
                region: "East",
                tags: vec![],
                email: true,
                sms: false,
                birth: None,
                purchases: categories.iter().map(|c| (day_number(today()) - 10, *c)).collect(),
            });
        }
        let ids = ingest(&app, &people).await;
        wait_for_view(&app).await;
        let books_only = &ids[4];
        let s = app.campaign().suggest_cross_sell(pb::SuggestCrossSellRequest { customer_id: books_only.clone(), ..Default::default() }).await.unwrap().into_inner();
        let first = &s.suggestions[0];
        assert_eq!((first.from_category.as_str(), first.to_category.as_str()), ("books", "music"));
        // 100 bought books, 80 of them music; 80 of 200 bought music.
        assert!((first.confidence - 0.8).abs() < 1e-9, "{first:?}");
        assert!((first.lift - 0.8 / 0.4).abs() < 1e-9, "{first:?}");
        assert!((first.support - 0.4).abs() < 1e-9);
        assert!(s.suggestions.iter().all(|x| x.to_category != "books" && x.lift > 1.0));

        let segment = create_segment(&app, "Toy buyers", "bought_category(\"toys\")").await;
        let s = app.campaign().suggest_cross_sell(pb::SuggestCrossSellRequest { segment_id: segment.id.clone(), max_suggestions: 3, ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(s.suggestions[0].to_category, "garden");
        let err = app.campaign().suggest_cross_sell(pb::SuggestCrossSellRequest::default()).await.unwrap_err();
        assert_eq!(violated_fields(&err), ["customer_id"]);
        let err = app.campaign().suggest_cross_sell(pb::SuggestCrossSellRequest { customer_id: "nobody".into(), ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
}

/// The first field violation's description.
fn description(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.description.clone()))
        .unwrap_or_default()
}

/// The same end-to-end checks with `campaign.in_memory_view = false`: every
/// rule runs against the database, with the pushed-down pre-filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_path_selects_the_same() {
    for backend in [
        patron_tests::Backend::Sqlite,
        patron_tests::Backend::Postgres,
    ] {
        let spawn = || TestApp::spawn_with(backend, |s| s.campaign.in_memory_view = false);
        if let Some(app) = spawn().await {
            segments_select_what_an_independent_evaluation_selects(app).await;
        }
        if let Some(app) = spawn().await {
            campaigns_freeze_disjoint_arms_and_report_uplift(app).await;
        }
        if let Some(app) = spawn().await {
            target_lists_are_consistent_snapshots(app).await;
        }
    }
}
