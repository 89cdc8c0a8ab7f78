//! A bounded soak, outside the default run: ingestion, score reads and
//! target streaming together against one server on PostgreSQL and Redis,
//! for `PATRON_SOAK_MINUTES` (default 10). Ingestion keeps updating a fixed
//! population of customers and adds purchases (so the data grows but the
//! number of customers, and with it campaign's in-memory mirror, does not).
//! No call may fail, and the process's memory must stay flat: the resident
//! size at the end may not exceed the one after warm-up by more than 25%.
//!
//!   PATRON_SOAK_MINUTES=10 scripts/test --run-ignored only -E 'test(soak)'
//!
//! It prints a line per minute (calls, failures, RSS) for the record.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use patron_tests::{
    Backend, TestApp,
    pb::{campaign as cpb, common::Money, profile as ppb, scoring as spb},
    redis_url,
};
use rand::{Rng, SeedableRng};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Counters {
    ingested: AtomicU64,
    reads: AtomicU64,
    streamed: AtomicU64,
    failures: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 10-minute soak; run it on purpose (see the module docs)"]
async fn soak_mixed_load_keeps_memory_flat() {
    let minutes: u64 = std::env::var("PATRON_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10);
    let Some(app) = TestApp::spawn_with(Backend::Postgres, |s| {
        s.redis.url = redis_url().map(Into::into);
    })
    .await
    else {
        return;
    };
    let ids = patron_tests::seed_buyers(&app, 500, 11).await;
    patron_tests::score_everyone(&app, &ids[..1]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::new();
    // `PATRON_SOAK_SKIP=ingest,scores,targets` leaves parts of the load out,
    // to find which one a regression comes from.
    let skip = std::env::var("PATRON_SOAK_SKIP").unwrap_or_default();

    // Ingestion: a fixed population of 10,000 customers, updated in batches
    // of 50 (attributes change), each batch with new purchases.
    if !skip.contains("ingest") {
        let (mut profile, stop, counters) = (app.profile(), stop.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let customers = (0..50)
                    .map(|k| ppb::Customer {
                        external_id: format!("soak-{}", (n * 50 + k) % 10_000),
                        region: ["East", "West"][(k % 2) as usize].into(),
                        city: format!("City {}", n % 7),
                        ..Default::default()
                    })
                    .collect();
                match profile
                    .upsert_customers(ppb::UpsertCustomersRequest { customers })
                    .await
                {
                    Ok(r) => {
                        let transactions = r
                            .into_inner()
                            .customers
                            .iter()
                            .map(|c| ppb::Transaction {
                                id: format!("soak-tx-{n}-{}", c.id),
                                customer_id: c.id.clone(),
                                occurred_at: Some(prost_types::Timestamp {
                                    seconds: chrono::Utc::now().timestamp() - 86_400,
                                    nanos: 0,
                                }),
                                amount: Some(Money {
                                    currency_code: "EUR".into(),
                                    units: 20,
                                    nanos: 0,
                                }),
                                quantity: 1,
                                category: "books".into(),
                                ..Default::default()
                            })
                            .collect();
                        match profile
                            .record_transactions(ppb::RecordTransactionsRequest { transactions })
                            .await
                        {
                            Ok(_) => counters.ingested.fetch_add(50, Ordering::Relaxed),
                            Err(_) => counters.failures.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    Err(_) => {
                        counters.failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // Scoring: a recompute every 30 s, score reads in between.
    if !skip.contains("scores") {
        let (mut scoring, stop, counters, ids) =
            (app.scoring(), stop.clone(), counters.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let mut last_recompute = Instant::now() - Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) {
                if last_recompute.elapsed() > Duration::from_secs(30) {
                    last_recompute = Instant::now();
                    match scoring
                        .recompute_scores(spb::RecomputeScoresRequest::default())
                        .await
                    {
                        Ok(s) => {
                            let mut s = s.into_inner();
                            while let Ok(Some(_)) = s.message().await {}
                        }
                        Err(_) => {
                            counters.failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let batch: Vec<String> = (0..20)
                    .map(|_| ids[rng.random_range(0..ids.len())].clone())
                    .collect();
                match scoring
                    .batch_get_scores(spb::BatchGetScoresRequest {
                        customer_ids: batch,
                    })
                    .await
                {
                    Ok(_) => counters.reads.fetch_add(20, Ordering::Relaxed),
                    Err(_) => counters.failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // Campaign tools: stream a target list over and over.
    if !skip.contains("targets") {
        let (mut campaign, stop, counters) = (app.campaign(), stop.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match campaign
                    .stream_targets(cpb::StreamTargetsRequest {
                        expression: "customer.region = \"East\"".into(),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(s) => {
                        let mut s = s.into_inner();
                        loop {
                            match s.message().await {
                                Ok(Some(m)) => {
                                    counters
                                        .streamed
                                        .fetch_add(m.targets.len() as u64, Ordering::Relaxed);
                                }
                                Ok(None) => break,
                                Err(_) => {
                                    counters.failures.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                        }
                    }
                    Err(_) => {
                        counters.failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    eprintln!("minute | ingested | score reads | targets streamed | failures | RSS MiB");
    for minute in 1..=minutes {
        tokio::time::sleep_until((started + Duration::from_secs(60 * minute)).into()).await;
        let rss = rss_kib();
        samples.push(rss);
        eprintln!(
            "{minute} | {} | {} | {} | {} | {:.1}",
            counters.ingested.load(Ordering::Relaxed),
            counters.reads.load(Ordering::Relaxed),
            counters.streamed.load(Ordering::Relaxed),
            counters.failures.load(Ordering::Relaxed),
            rss as f64 / 1024.0
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        counters.failures.load(Ordering::Relaxed),
        0,
        "no call failed"
    );
    assert!(skip.contains("scores") || counters.reads.load(Ordering::Relaxed) > 0);
    assert!(skip.contains("targets") || counters.streamed.load(Ordering::Relaxed) > 0);
    // Memory: after warm-up (the first fifth, at least two minutes: the
    // population must be complete) the resident size stays flat.
    let warm = samples[(samples.len() / 5).max(2) - 1];
    let last = *samples.last().unwrap();
    assert!(
        last <= warm + warm / 4,
        "RSS grew from {warm} KiB to {last} KiB"
    );
}
