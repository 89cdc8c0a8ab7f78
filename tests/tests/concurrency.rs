//! Idempotency and optimistic concurrency under real concurrency, on both
//! backends: concurrent replays of one `request_id` create one thing;
//! a retry after the client gave up on the first attempt returns the first
//! answer; of N concurrent updates carrying the same etag, exactly one wins
//! and the others are ABORTED.

use std::{collections::HashSet, time::Duration};

use futures::future::join_all;
use patron_tests::{
    backend_tests,
    pb::{campaign as cpb, feedback as fpb, profile as ppb},
};
use prost_types::FieldMask;
use tonic::Code;

const RACERS: usize = 8;

async fn customer(app: &patron_tests::TestApp, external_id: &str) -> ppb::Customer {
    app.profile()
        .create_customer(ppb::CreateCustomerRequest {
            customer: Some(ppb::Customer {
                external_id: external_id.into(),
                region: "East".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

backend_tests! {
    async fn concurrent_replays_of_one_request_id_create_one_thing(app: TestApp) {
        // Customers.
        let created = join_all((0..RACERS).map(|_| {
            let mut profile = app.profile();
            async move {
                profile.create_customer(ppb::CreateCustomerRequest {
                    customer: Some(ppb::Customer { external_id: "race-1".into(), ..Default::default() }),
                    request_id: "req-race-1".into(),
                }).await
            }
        })).await;
        let ids: HashSet<String> = created.into_iter().map(|r| r.expect("every replay succeeds").into_inner().id).collect();
        assert_eq!(ids.len(), 1, "one customer for one request id");
        let id = ids.into_iter().next().unwrap();

        // Complaints.
        let filed = join_all((0..RACERS).map(|_| {
            let mut feedback = app.feedback();
            let id = id.clone();
            async move {
                feedback.file_complaint(fpb::FileComplaintRequest {
                    complaint: Some(fpb::Complaint { customer_id: id, r#type: "billing".into(), ..Default::default() }),
                    request_id: "req-race-complaint".into(),
                }).await
            }
        })).await;
        let complaint_ids: HashSet<String> = filed.into_iter().map(|r| r.expect("every replay succeeds").into_inner().id).collect();
        assert_eq!(complaint_ids.len(), 1, "one complaint for one request id");
        let listed = app.feedback().list_complaints(fpb::ListComplaintsRequest { page_size: 100, ..Default::default() }).await.unwrap().into_inner();
        assert_eq!(listed.complaints.len(), 1);

        // Campaigns.
        let segment = app.campaign().create_segment(cpb::CreateSegmentRequest {
            segment: Some(cpb::Segment { display_name: "East".into(), expression: "customer.region = \"East\"".into(), ..Default::default() }),
        }).await.unwrap().into_inner();
        let campaigns = join_all((0..RACERS).map(|_| {
            let mut campaign = app.campaign();
            let segment_id = segment.id.clone();
            async move {
                campaign.create_campaign(cpb::CreateCampaignRequest {
                    campaign: Some(cpb::Campaign { display_name: "Spring".into(), kind: cpb::CampaignKind::Retention as i32, channel: "email".into(), segment_id, control_fraction: 0.1, ..Default::default() }),
                    request_id: "req-race-campaign".into(),
                }).await
            }
        })).await;
        let campaign_ids: HashSet<String> = campaigns.into_iter().map(|r| r.expect("every replay succeeds").into_inner().id).collect();
        assert_eq!(campaign_ids.len(), 1, "one campaign for one request id");
    }

    async fn a_retry_after_giving_up_returns_the_first_answer(app: TestApp) {
        // The first attempt is abandoned by the client almost at once: the
        // server may or may not have completed it.
        let mut profile = app.profile();
        let request = || ppb::CreateCustomerRequest {
            customer: Some(ppb::Customer { external_id: "retry-1".into(), ..Default::default() }),
            request_id: "req-retry-1".into(),
        };
        let _ = tokio::time::timeout(Duration::from_micros(300), profile.create_customer(request())).await;
        let retried = profile.create_customer(request()).await.expect("the retry succeeds").into_inner();
        let again = profile.create_customer(request()).await.expect("and so does the next").into_inner();
        assert_eq!(retried.id, again.id);
        let listed = profile.list_customers(ppb::ListCustomersRequest {
            filter: "external_id = \"retry-1\"".into(),
            page_size: 10,
            ..Default::default()
        }).await.unwrap().into_inner();
        assert_eq!(listed.customers.len(), 1, "exactly one customer");
    }

    async fn of_concurrent_updates_with_one_etag_exactly_one_wins(app: TestApp) {
        let c = customer(&app, "etag-1").await;
        let results = join_all((0..RACERS).map(|i| {
            let mut profile = app.profile();
            let (id, etag) = (c.id.clone(), c.etag.clone());
            async move {
                profile.update_customer(ppb::UpdateCustomerRequest {
                    customer: Some(ppb::Customer { id, etag, city: format!("City {i}"), ..Default::default() }),
                    update_mask: Some(FieldMask { paths: vec!["city".into()] }),
                }).await
            }
        })).await;
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "exactly one update wins: {results:?}");
        for r in &results {
            if let Err(status) = r {
                assert_eq!(status.code(), Code::Aborted, "{status:?}");
            }
        }
        let stored = app.profile().get_customer(ppb::GetCustomerRequest { id: c.id.clone() }).await.unwrap().into_inner();
        assert_eq!(stored.city, winners[0].get_ref().city, "the winner's write is the stored one");

        // Segments too.
        let segment = app.campaign().create_segment(cpb::CreateSegmentRequest {
            segment: Some(cpb::Segment { display_name: "S".into(), expression: "customer.region = \"East\"".into(), ..Default::default() }),
        }).await.unwrap().into_inner();
        let results = join_all((0..RACERS).map(|i| {
            let mut campaign = app.campaign();
            let (id, etag) = (segment.id.clone(), segment.etag.clone());
            async move {
                campaign.update_segment(cpb::UpdateSegmentRequest {
                    segment: Some(cpb::Segment { id, etag, display_name: format!("S{i}"), ..Default::default() }),
                    update_mask: Some(FieldMask { paths: vec!["display_name".into()] }),
                }).await
            }
        })).await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "exactly one segment update wins: {results:?}");
        assert!(results.iter().all(|r| r.as_ref().err().is_none_or(|s| s.code() == Code::Aborted)), "{results:?}");
    }
}

/// A server on PostgreSQL and Redis (no near tier) with 200 scored buyers,
/// their cached scores deleted from Redis behind its back (as if expired).
async fn scored_with_cache_emptied() -> Option<(patron_tests::TestApp, Vec<String>)> {
    let Some(redis) = patron_tests::redis_url() else {
        patron_tests::skip("stampede test", "REDIS_URL is not set");
        return None;
    };
    let prefix = format!("patron-stampede-{}:", uuid::Uuid::new_v4().simple());
    let app = patron_tests::TestApp::spawn_with(patron_tests::Backend::Postgres, |s| {
        s.redis.url = Some(redis.clone().into());
        s.redis.key_prefix = prefix.clone();
        // Redis alone: the test evicts from Redis behind the cache's back.
        s.cache.near_ttl_ms = 0;
        // Coalescing is under test, not the timeout fallback: on a loaded
        // machine a Redis call can pass the 50 ms default, and a reader whose
        // look into the cache times out rightly goes to the store itself.
        s.redis.response_timeout_ms = 5_000;
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await?;
    let ids = patron_tests::seed_buyers(&app, 200, 11).await;
    patron_tests::score_everyone(&app, &ids[..1]).await;
    let (mut conn, keys) = patron_tests::redis_keys(&redis, &prefix).await;
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    Some((app, ids))
}

fn store_loads(metrics: &str) -> f64 {
    patron_tests::metric(metrics, "patron_cache_store_loads_total").unwrap_or(0.0)
}

/// A cache stampede: a hot customer's cached score is gone, and 64 reads
/// for it arrive at once. They share one store read (which refills the
/// cache); the next reads are cache hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_on_one_hot_key_issues_one_store_read() {
    use patron_tests::pb::scoring as spb;
    let Some((app, ids)) = scored_with_cache_emptied().await else {
        return;
    };
    let hot = ids[0].clone();
    let before = store_loads(&app.metrics().await);
    let reads = join_all((0..64).map(|_| {
        let mut scoring = app.scoring();
        let id = hot.clone();
        async move {
            scoring
                .get_score(spb::GetScoreRequest { customer_id: id })
                .await
        }
    }))
    .await;
    assert!(reads.iter().all(|r| r.is_ok()), "every read succeeds");
    let first = &reads[0].as_ref().unwrap().get_ref().score;
    assert!(
        reads
            .iter()
            .all(|r| r.as_ref().unwrap().get_ref().score == *first),
        "all see the same score"
    );
    let after = store_loads(&app.metrics().await);
    assert_eq!(after - before, 1.0, "64 concurrent misses, one store read");
    // Refilled: more reads are hits.
    for _ in 0..5 {
        app.scoring()
            .get_score(spb::GetScoreRequest {
                customer_id: hot.clone(),
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store_loads(&app.metrics().await),
        after,
        "later reads hit the cache"
    );
}

/// The same for batches: 24 concurrent `BatchGetScores` of two overlapping
/// ranges of 100 ids (0-99 and 50-149) after the scores left the cache.
/// However the calls interleave, each score is read from the store once:
/// two store reads in all (one per range's ids that the other does not
/// cover), and every call gets its 100 scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overlapping_batches_read_each_score_once() {
    use patron_tests::pb::scoring as spb;
    let Some((app, ids)) = scored_with_cache_emptied().await else {
        return;
    };
    let before = store_loads(&app.metrics().await);
    let ranges = [&ids[0..100], &ids[50..150]];
    let reads = join_all((0..24).map(|i| {
        let mut scoring = app.scoring();
        let customer_ids = ranges[i % 2].to_vec();
        async move {
            scoring
                .batch_get_scores(spb::BatchGetScoresRequest {
                    customer_ids: customer_ids.clone(),
                })
                .await
                .map(|r| (customer_ids, r.into_inner()))
        }
    }))
    .await;
    for read in reads {
        let (asked, got) = read.expect("every batch succeeds");
        assert!(got.missing_ids.is_empty(), "{:?}", got.missing_ids);
        let returned: Vec<&str> = got.scores.iter().map(|s| s.customer_id.as_str()).collect();
        assert_eq!(
            returned,
            asked.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }
    let after = store_loads(&app.metrics().await);
    assert_eq!(after - before, 2.0, "two ranges, each score read once");
    // Refilled: the same batches again are cache hits.
    for range in ranges {
        app.scoring()
            .batch_get_scores(spb::BatchGetScoresRequest {
                customer_ids: range.to_vec(),
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store_loads(&app.metrics().await),
        after,
        "later batches hit the cache"
    );
}
