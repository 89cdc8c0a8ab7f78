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
