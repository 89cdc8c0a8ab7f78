//! `patron bench ...`: load generators against a running server. These are
//! benchmarks, not tests: they print figures for BENCHMARKS.md.

use std::time::{Duration, Instant};

use crate::client::Channel;
use futures::{StreamExt, stream};
use patron_proto::{
    common::Money,
    profile::{self as pb, customer_profile_service_client::CustomerProfileServiceClient},
};
use prost_types::Timestamp;

fn client(channel: Channel) -> CustomerProfileServiceClient<Channel> {
    CustomerProfileServiceClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

/// RecordTransactions throughput: `transactions` spread over `customers`,
/// `batch` per call, `concurrency` calls in flight.
pub(crate) async fn ingest(
    channel: Channel,
    customers: usize,
    transactions: usize,
    batch: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 8..];
    let mut c = client(channel.clone());
    let mut ids = Vec::with_capacity(customers);
    for chunk in (0..customers).collect::<Vec<_>>().chunks(1_000) {
        let batch = chunk
            .iter()
            .map(|i| pb::Customer {
                external_id: format!("bench-{run}-{i}"),
                region: "East".into(),
                ..Default::default()
            })
            .collect();
        let r = c
            .upsert_customers(pb::UpsertCustomersRequest { customers: batch })
            .await?
            .into_inner();
        ids.extend(r.customers.into_iter().map(|c| c.id));
    }
    let base = chrono::Utc::now().timestamp() - 700 * 86_400;
    let batches: Vec<Vec<pb::Transaction>> = (0..transactions)
        .map(|i| pb::Transaction {
            id: format!("bench-{run}-t{i}"),
            customer_id: ids[i % ids.len()].clone(),
            occurred_at: Some(Timestamp {
                seconds: base + (i as i64 * 37) % (690 * 86_400),
                nanos: 0,
            }),
            amount: Some(Money {
                currency_code: "EUR".into(),
                units: 10 + (i % 90) as i64,
                nanos: 500_000_000,
            }),
            channel: "web".into(),
            product_id: format!("p-{}", i % 500),
            category: ["books", "home", "toys", "fashion"][i % 4].into(),
            quantity: 1,
            region: "East".into(),
            ..Default::default()
        })
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(<[_]>::to_vec)
        .collect();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = stream::iter(batches)
        .map(|transactions| {
            let mut c = client(channel.clone());
            async move {
                let t = Instant::now();
                c.record_transactions(pb::RecordTransactionsRequest { transactions })
                    .await?;
                Ok::<_, tonic::Status>(t.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let elapsed = started.elapsed();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    println!(
        "ingest: {transactions} transactions in batches of {batch}, {concurrency} in flight: {:.2} s, {:.0} transactions/s; per call p50 {:?} p99 {:?}",
        elapsed.as_secs_f64(),
        transactions as f64 / elapsed.as_secs_f64(),
        p(0.5),
        p(0.99),
    );
    Ok(())
}

/// StreamChanges catch-up: read the feed from `after` to the current head.
pub(crate) async fn feed(channel: Channel, after: i64) -> anyhow::Result<()> {
    let mut c = client(channel);
    let started = Instant::now();
    let mut stream = c
        .stream_changes(pb::StreamChangesRequest {
            after_sequence: after,
            max_batch_size: 0,
        })
        .await?
        .into_inner();
    let mut rows = 0u64;
    let mut head = i64::MAX;
    let mut last = after;
    while last < head {
        let Some(message) = stream.next().await.transpose()? else {
            break;
        };
        if head == i64::MAX {
            head = message.head_sequence;
        }
        rows += message.events.len() as u64;
        last = message.events.last().map_or(last, |e| e.sequence);
    }
    let elapsed = started.elapsed();
    println!(
        "feed: {rows} changes caught up in {:.2} s, {:.0} changes/s",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// GetNpsReport grouped by product over `responses` survey answers (written
/// first, in batches of 5,000, if the server has fewer).
pub(crate) async fn nps(channel: Channel, responses: usize) -> anyhow::Result<()> {
    use patron_proto::feedback::{
        GetNpsReportRequest, SubmitSurveyResponsesRequest, SurveyKind, SurveyResponse,
        feedback_service_client::FeedbackServiceClient,
    };
    let mut feedback =
        FeedbackServiceClient::new(channel.clone()).max_encoding_message_size(256 << 20);
    let existing = feedback
        .get_nps_report(GetNpsReportRequest::default())
        .await?
        .into_inner()
        .responses as usize;
    if existing < responses {
        let mut c = client(channel.clone());
        let customers = c
            .upsert_customers(pb::UpsertCustomersRequest {
                customers: (0..1_000)
                    .map(|i| pb::Customer {
                        external_id: format!("nps-bench-{i}"),
                        ..Default::default()
                    })
                    .collect(),
            })
            .await?
            .into_inner()
            .customers;
        let base = chrono::Utc::now().timestamp() - 300 * 86_400;
        let started = Instant::now();
        for chunk_start in (existing..responses).step_by(5_000) {
            let batch = (chunk_start..(chunk_start + 5_000).min(responses))
                .map(|i| SurveyResponse {
                    id: format!("nps-bench-{i}"),
                    customer_id: customers[i % customers.len()].id.clone(),
                    kind: SurveyKind::Nps as i32,
                    score: ((i * 7) % 11) as i32,
                    product_id: format!("product-{:02}", i % 50),
                    region: ["North", "South", "East", "West"][i % 4].into(),
                    channel: "email".into(),
                    occurred_at: Some(Timestamp {
                        seconds: base + (i as i64 % 25_000_000),
                        nanos: 0,
                    }),
                    ..Default::default()
                })
                .collect();
            feedback
                .submit_survey_responses(SubmitSurveyResponsesRequest { responses: batch })
                .await?;
        }
        println!(
            "wrote {} responses in {:.1} s",
            responses - existing,
            started.elapsed().as_secs_f64()
        );
    }
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let report = feedback
            .get_nps_report(GetNpsReportRequest {
                group_by: "product_id".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        times.push(t.elapsed());
        anyhow::ensure!(report.responses as usize >= responses && report.groups.len() >= 50);
    }
    times.sort();
    println!(
        "nps report by product over {responses} responses: median {:?}, best {:?} (7 calls)",
        times[3], times[0]
    );
    Ok(())
}

/// Segment figures over a large population: seeds `customers` customers
/// (varied region, tags, consent, birth dates) through UpsertCustomers,
/// waits until campaign's view has them (the profile feed -> campaign
/// follower), then times a five-clause PreviewSegment and a StreamTargets of
/// the whole population (time to first message, rows per second).
pub(crate) async fn targets(
    channel: Channel,
    customers: usize,
    reuse: Option<String>,
) -> anyhow::Result<()> {
    use patron_proto::campaign::campaign_service_client::CampaignServiceClient;
    let run = reuse.clone().unwrap_or_else(|| {
        let id = uuid::Uuid::now_v7().simple().to_string();
        id[id.len() - 8..].to_owned()
    });
    let mut campaign =
        CampaignServiceClient::new(channel.clone()).max_decoding_message_size(256 << 20);
    let all = format!("customer.external_id != \"\" and has(customer.tags, \"bench-{run}\")");
    if reuse.is_none() {
        seed_customers(&channel, &mut campaign, &run, customers, &all).await?;
    }
    measure_targets(&mut campaign, &run, customers, &all).await
}

async fn seed_customers(
    channel: &Channel,
    campaign: &mut patron_proto::campaign::campaign_service_client::CampaignServiceClient<Channel>,
    run: &str,
    customers: usize,
    all: &str,
) -> anyhow::Result<()> {
    use patron_proto::{campaign as cpb, common::MarketingConsent, google::r#type::Date};
    let started = Instant::now();
    let batches: Vec<Vec<pb::Customer>> = (0..customers)
        .map(|i| {
            let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            pb::Customer {
                external_id: format!("bench-{run}-{i}"),
                display_name: format!("Bench {i}"),
                email: format!("b{i}@example.com"),
                region: ["East", "West", "North", "South"][(h % 4) as usize].into(),
                tags: if h.is_multiple_of(5) {
                    vec![format!("bench-{run}"), "vip".into()]
                } else {
                    vec![format!("bench-{run}")]
                },
                birth_date: Some(Date {
                    year: 1950 + ((h >> 8) % 55) as i32,
                    month: 1 + ((h >> 16) % 12) as i32,
                    day: 1 + ((h >> 24) % 28) as i32,
                }),
                marketing_consent: Some(MarketingConsent {
                    email: !h.is_multiple_of(3),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect::<Vec<_>>()
        .chunks(1_000)
        .map(<[_]>::to_vec)
        .collect();
    stream::iter(batches)
        .map(|customers| {
            let mut c = client(channel.clone());
            async move {
                c.upsert_customers(pb::UpsertCustomersRequest { customers })
                    .await
            }
        })
        .buffer_unordered(4)
        .for_each(|r| async {
            if let Err(e) = r {
                eprintln!("upsert failed: {e}");
            }
        })
        .await;
    let upserted = started.elapsed();
    loop {
        let selected = campaign
            .preview_segment(cpb::PreviewSegmentRequest {
                expression: all.to_owned(),
                sample_size: 1,
            })
            .await?
            .into_inner()
            .count;
        if selected >= customers as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let in_view = started.elapsed();
    println!(
        "seeded {customers} customers (--reuse {run}): upserted in {:.1} s, in campaign's view after {:.1} s ({:.0} customers/s end to end)",
        upserted.as_secs_f64(),
        in_view.as_secs_f64(),
        customers as f64 / in_view.as_secs_f64()
    );
    Ok(())
}

async fn measure_targets(
    campaign: &mut patron_proto::campaign::campaign_service_client::CampaignServiceClient<Channel>,
    run: &str,
    customers: usize,
    all: &str,
) -> anyhow::Result<()> {
    use patron_proto::campaign as cpb;
    let count = |c: &mut patron_proto::campaign::campaign_service_client::CampaignServiceClient<
        Channel,
    >,
                 expression: String| {
        let mut c = c.clone();
        async move {
            anyhow::Ok(
                c.preview_segment(cpb::PreviewSegmentRequest {
                    expression,
                    sample_size: 1,
                })
                .await?
                .into_inner()
                .count,
            )
        }
    };

    let rule = format!(
        "has(customer.tags, \"bench-{run}\") and customer.region = \"East\" and consent.email and customer.age >= 30 and days_to_birthday <= 60"
    );
    let mut times = Vec::new();
    let mut selected = 0;
    for _ in 0..5 {
        let t = Instant::now();
        selected = count(campaign, rule.clone()).await?;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "PreviewSegment, five clauses over {customers} customers: {selected} selected, median {:.3} s (min {:.3} s)",
        times[2].as_secs_f64(),
        times[0].as_secs_f64()
    );

    for _ in 0..3 {
        let t = Instant::now();
        let mut s = campaign
            .stream_targets(cpb::StreamTargetsRequest {
                expression: all.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut first = None;
        let mut rows = 0usize;
        let mut messages = 0usize;
        while let Some(m) = s.message().await? {
            first.get_or_insert_with(|| t.elapsed());
            rows += m.targets.len();
            messages += 1;
        }
        let total = t.elapsed();
        println!(
            "StreamTargets of {rows} rows in {messages} messages: first message after {:.1} ms, all in {:.2} s = {:.0} rows/s",
            first.unwrap_or_default().as_secs_f64() * 1e3,
            total.as_secs_f64(),
            rows as f64 / total.as_secs_f64()
        );
    }
    Ok(())
}

/// The hot path: seeds `customers` buyers (unless `reuse`), fits and
/// recomputes, then times GetScore with 1 and `in_flight` calls in flight
/// and BatchGetScores of 100 ids, each for `seconds`.
pub(crate) async fn scores(
    target: &crate::client::Target,
    customers: usize,
    reuse: Option<String>,
    in_flight: usize,
    connections: usize,
    seconds: u64,
    drop_from: f64,
) -> anyhow::Result<()> {
    use std::sync::Arc;

    use bytes::Bytes;
    use patron_proto::scoring::{
        BatchGetScoresRequest, BatchGetScoresResponse, CustomerScore, FitModelRequest,
        GetScoreRequest, RecomputeScoresRequest, scoring_service_client::ScoringServiceClient,
    };
    use prost::Message;

    use crate::load;
    // The measured RPCs (refused here, before seeding, if the load client
    // cannot reach the endpoint: it speaks plain http:// only).
    let check = load::Method::new(target, "/grpc.health.v1.Health/Check")?;
    let get_score = load::Method::new(target, "/patron.scoring.v1.ScoringService/GetScore")?;
    let batch_get_scores =
        load::Method::new(target, "/patron.scoring.v1.ScoringService/BatchGetScores")?;
    let channel = crate::client::channel(target).await?;
    let run = reuse.clone().unwrap_or_else(|| {
        let id = uuid::Uuid::now_v7().simple().to_string();
        id[id.len() - 8..].to_owned()
    });
    let mut profile = client(channel.clone());
    let ids: Vec<String> = if reuse.is_none() {
        use rand::{Rng, SeedableRng};
        use rand_distr::Distribution;
        let started = Instant::now();
        let mut ids = Vec::with_capacity(customers);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let spend = rand_distr::Gamma::new(3.0, 15.0)?;
        for chunk in (0..customers).collect::<Vec<_>>().chunks(1_000) {
            let batch = chunk
                .iter()
                .map(|i| pb::Customer {
                    external_id: format!("scorebench-{run}-{i}"),
                    tags: vec![format!("scorebench-{run}")],
                    ..Default::default()
                })
                .collect();
            let created = profile
                .upsert_customers(pb::UpsertCustomersRequest { customers: batch })
                .await?
                .into_inner()
                .customers;
            let now = chrono::Utc::now().timestamp();
            let mut transactions = Vec::new();
            for c in &created {
                // The BG/NBD and Gamma-Gamma story (the models must be
                // identifiable): each customer buys at its own rate until it
                // drops out, at its own spend level.
                let rate = rng.random_range(0.005..0.08);
                let drop = rng.random_range(drop_from..drop_from * 10.0);
                let level = spend.sample(&mut rng);
                let mut day = -700 + rng.random_range(0..400i64);
                let mut k = 0;
                while day < 0 {
                    transactions.push(pb::Transaction {
                        id: format!("{}-{k}", c.id),
                        customer_id: c.id.clone(),
                        occurred_at: Some(Timestamp {
                            seconds: now + 86_400 * day,
                            nanos: 0,
                        }),
                        amount: Some(Money {
                            currency_code: "EUR".into(),
                            units: (level * rng.random_range(0.6..1.4)) as i64 + 1,
                            nanos: 0,
                        }),
                        quantity: 1,
                        category: "books".into(),
                        ..Default::default()
                    });
                    k += 1;
                    if rng.random_bool(drop) {
                        break;
                    }
                    day += (-rng.random::<f64>().max(1e-9).ln() / rate).ceil() as i64;
                }
            }
            for transactions in transactions.chunks(5_000) {
                profile
                    .record_transactions(pb::RecordTransactionsRequest {
                        transactions: transactions.to_vec(),
                    })
                    .await?;
            }
            ids.extend(created.into_iter().map(|c| c.id));
        }
        println!(
            "seeded {customers} customers (tag {run}) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        ids
    } else {
        let mut ids = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = profile
                .list_customers(pb::ListCustomersRequest {
                    page_size: 1_000,
                    page_token,
                    filter: format!("tags:\"scorebench-{run}\""),
                    ..Default::default()
                })
                .await?
                .into_inner();
            ids.extend(page.customers.into_iter().map(|c| c.id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        ids
    };
    anyhow::ensure!(!ids.is_empty(), "no customers for tag {run}");
    let mut scoring = ScoringServiceClient::new(channel.clone());
    // Scoring's read model follows the feed: fit until it has everyone.
    let started = Instant::now();
    let fit = loop {
        let attempt = Instant::now();
        if let Ok(fit) = scoring.fit_model(FitModelRequest::default()).await
            && fit.get_ref().customers >= ids.len() as i64
        {
            break (fit.into_inner(), attempt.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3_600),
            "scoring's read model did not catch up within an hour"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    println!(
        "read model caught up after {:.1} s; FitModel on {} customers: {:.2} s",
        started.elapsed().as_secs_f64(),
        fit.0.customers,
        fit.1.as_secs_f64()
    );
    let started = Instant::now();
    let mut progress = scoring
        .recompute_scores(RecomputeScoresRequest::default())
        .await?
        .into_inner();
    let mut total = 0;
    while let Some(p) = progress.message().await? {
        total = p.total;
    }
    println!(
        "RecomputeScores of {total} customers (read, score, store, cache): {:.2} s",
        started.elapsed().as_secs_f64()
    );
    // Warm every score into the cache first (the figures are for hits).
    for chunk in ids.chunks(1_000) {
        scoring
            .batch_get_scores(BatchGetScoresRequest {
                customer_ids: chunk.to_vec(),
            })
            .await?;
    }
    let duration = Duration::from_secs(seconds.max(1));
    let invalid =
        |e: prost::DecodeError| tonic::Status::internal(format!("undecodable answer: {e}"));
    // The transport's floor on this machine: the cheapest call there is.
    let health = {
        let request = load::frame(&tonic_health::pb::HealthCheckRequest::default());
        async move |connection: &mut load::Connection, _| {
            let answer = connection.call(&check, request.clone()).await?;
            tonic_health::pb::HealthCheckResponse::decode(answer).map_err(invalid)?;
            Ok(1)
        }
    };
    let floor = load::closed_loop(target, connections, 1, duration, health).await?;
    println!(
        "floor: grpc.health.v1 Check, 1 in flight: {:.0} calls/s; p50 {:?} p99 {:?}",
        floor.per_second(floor.calls),
        floor.percentile(0.5),
        floor.percentile(0.99),
    );
    // Every request is encoded before the clock starts; each answer is
    // decoded and must be the score asked for.
    let get = {
        let requests: Arc<Vec<(String, Bytes)>> = Arc::new(
            ids.iter()
                .map(|id| {
                    let request = GetScoreRequest {
                        customer_id: id.clone(),
                    };
                    (id.clone(), load::frame(&request))
                })
                .collect(),
        );
        async move |connection: &mut load::Connection, r: u64| {
            let (id, request) = &requests[(r % requests.len() as u64) as usize];
            let answer = connection.call(&get_score, request.clone()).await?;
            let score = CustomerScore::decode(answer).map_err(invalid)?;
            if score.customer_id != *id {
                return Err(tonic::Status::internal(format!(
                    "asked for {id}, answered {}",
                    score.customer_id
                )));
            }
            Ok(1)
        }
    };
    for in_flight in [1, in_flight] {
        let run = load::closed_loop(target, connections, in_flight, duration, get.clone()).await?;
        println!(
            "GetScore, {in_flight} in flight over {} connections, {} customers: {} calls in {:.1} s = {:.0} calls/s; p50 {:?} p99 {:?} p99.9 {:?}",
            run.connections,
            ids.len(),
            run.calls,
            run.elapsed.as_secs_f64(),
            run.per_second(run.calls),
            run.percentile(0.5),
            run.percentile(0.99),
            run.percentile(0.999),
        );
    }
    let batch = {
        // 1,024 different batches of 100 ids spread over the population.
        let requests: Arc<Vec<Bytes>> = Arc::new(
            (0..1_024)
                .map(|b| {
                    let start = b * 7_907 % ids.len();
                    let customer_ids = (0..100)
                        .map(|k| ids[(start + k * 7_919) % ids.len()].clone())
                        .collect();
                    load::frame(&BatchGetScoresRequest { customer_ids })
                })
                .collect(),
        );
        async move |connection: &mut load::Connection, r: u64| {
            let request = &requests[(r % requests.len() as u64) as usize];
            let answer = connection.call(&batch_get_scores, request.clone()).await?;
            let answer = BatchGetScoresResponse::decode(answer).map_err(invalid)?;
            if answer.scores.len() + answer.missing_ids.len() != 100 {
                return Err(tonic::Status::internal(format!(
                    "asked for 100 scores, answered {} and {} missing",
                    answer.scores.len(),
                    answer.missing_ids.len()
                )));
            }
            Ok(answer.scores.len() as u64)
        }
    };
    let batch_in_flight = 8;
    let run = load::closed_loop(target, connections, batch_in_flight, duration, batch).await?;
    println!(
        "BatchGetScores of 100 ids, {batch_in_flight} in flight: {} calls, {} scores in {:.1} s = {:.0} scores/s; per call p50 {:?} p99 {:?}",
        run.calls,
        run.items,
        run.elapsed.as_secs_f64(),
        run.per_second(run.items),
        run.percentile(0.5),
        run.percentile(0.99),
    );
    Ok(())
}

/// Refreshing `entries` cached scores of `value_bytes` each in Redis through
/// the score cache, as a recompute does after storing its scores (one
/// `put_many`: pipelined, then one invalidation message for the replicas'
/// near tiers).
pub(crate) async fn cache_refresh(
    redis_url: &str,
    entries: usize,
    value_bytes: usize,
) -> anyhow::Result<()> {
    use patron_cache::{CacheSettings, RedisCache, RedisSettings, ScoreCache};
    let prefix = format!("patron-bench:{}:", uuid::Uuid::now_v7().simple());
    let settings = RedisSettings {
        url: Some(redis_url.to_owned().into()),
        key_prefix: prefix.clone(),
        ..RedisSettings::default()
    };
    let cache = RedisCache::connect_in_background(&settings, &CacheSettings::default());
    let started = Instant::now();
    while !cache.is_connected() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "cannot reach redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Twice: the first recompute creates every key; each later one (the
    // usual case) writes new scores over the hot ones already there.
    for (pass, what) in [(1u8, "new keys"), (2, "over the cached scores")] {
        let value = vec![pass; value_bytes];
        // A buffer per score, as a recompute's are.
        let batch: Vec<(String, patron_cache::Bytes)> = (0..entries)
            .map(|i| (format!("score:{i:012}"), value.clone().into()))
            .collect();
        let started = Instant::now();
        cache.put_many(batch).await?;
        let elapsed = started.elapsed();
        println!(
            "cache refresh, {what}: {entries} scores of {value_bytes} bytes written to Redis in {:.2} s = {:.0} scores/s",
            elapsed.as_secs_f64(),
            entries as f64 / elapsed.as_secs_f64()
        );
    }
    use redis::AsyncCommands;
    // Leave nothing behind: every key under this run's prefix.
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = {
        let mut scan = conn.scan_match::<_, String>(format!("{prefix}*")).await?;
        let mut keys = Vec::new();
        while let Some(key) = scan.next_item().await {
            keys.push(key?);
        }
        keys
    };
    for chunk in keys.chunks(1_000) {
        let _: () = redis::cmd("UNLINK")
            .arg(chunk)
            .query_async(&mut conn)
            .await?;
    }
    Ok(())
}
