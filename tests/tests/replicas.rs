//! Several replicas of every service on one database, as a scaled-out
//! deployment runs them: each replica follows the change feed, and each
//! change still takes effect exactly once (the cursor moves by
//! compare-and-set; the loser of a race rolls its batch back).

use std::time::Duration;

use patron_tests::{
    backend_tests,
    pb::{common, profile as profile_pb, scoring as pb},
};

const CUSTOMERS: usize = 10;
const BATCHES: usize = 25;
const PER_BATCH: usize = 8;

backend_tests! {
    async fn two_replicas_apply_each_feed_change_once(app: TestApp) {
        let replica = app.spawn_replica().await;
        let mut ids = Vec::new();
        for c in 0..CUSTOMERS {
            ids.push(app.profile().create_customer(profile_pb::CreateCustomerRequest {
                customer: Some(profile_pb::Customer { external_id: format!("r-{c}"), ..Default::default() }),
                request_id: String::new(),
            }).await.unwrap().into_inner().id);
        }
        // Many small commits, written through both replicas, so that both
        // followers race for nearly every batch.
        for b in 0..BATCHES {
            let transactions = (0..PER_BATCH).map(|k| profile_pb::Transaction {
                id: format!("t-{b}-{k}"),
                customer_id: ids[(b + k) % CUSTOMERS].clone(),
                occurred_at: Some(prost_types::Timestamp { seconds: 1_735_689_600 + (b * 86_400) as i64, nanos: 0 }),
                amount: Some(common::Money { currency_code: "EUR".into(), units: 10, nanos: 0 }),
                quantity: 1,
                region: "East".into(),
                category: "books".into(),
                ..Default::default()
            }).collect();
            let via = if b % 2 == 0 { &app } else { &replica };
            via.profile().record_transactions(profile_pb::RecordTransactionsRequest { transactions }).await.unwrap();
        }
        let expected = (BATCHES * PER_BATCH) as i64;
        let request = pb::GetProductDistributionReportRequest {
            start_time: Some(prost_types::Timestamp { seconds: 1_704_067_200, nanos: 0 }),
            end_time: Some(prost_types::Timestamp { seconds: 1_798_761_600, nanos: 0 }),
            period: common::Period::Year as i32,
            by_channel: false,
        };
        let total = |r: &pb::ProductDistributionReport| r.rows.iter().map(|r| r.transactions).sum::<i64>();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = app.scoring().get_product_distribution_report(request).await.unwrap().into_inner();
            if total(&r) >= expected {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "rollup stuck at {}", total(&r));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Give a slower duplicate every chance to land, then count again on both.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for server in [&app, &replica] {
            let r = server.scoring().get_product_distribution_report(request).await.unwrap().into_inner();
            assert_eq!(total(&r), expected, "each transaction counted once: {r:?}");
            let quantity: i64 = r.rows.iter().map(|r| r.quantity).sum();
            assert_eq!(quantity, expected);
        }
        drop(replica);
    }
}
