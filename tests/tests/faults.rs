//! Faults injected into real dependencies under traffic: a Redis started by
//! the test is hung (SIGSTOP), killed (SIGKILL) and restarted while clients
//! keep reading scores. No call may fail, none may wait on the dead cache
//! for long, and the cache is used again once Redis is back.

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use patron_tests::{
    Backend, TestApp, metric,
    pb::scoring::{self as spb},
    skip,
};
use rand::{Rng, SeedableRng};

/// A throwaway Redis on its own port.
struct RedisProcess {
    child: Option<Child>,
}

impl RedisProcess {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(redis)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
    }
}

/// A throwaway Redis on a free port, or `None` (the test skipped, saying
/// so) where `redis-server` is not installed.
fn private_redis() -> Option<(RedisProcess, u16)> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("Redis fault test", "redis-server is not installed");
        return None;
    }
    let port = free_port();
    Some((RedisProcess::start(port).expect("start redis-server"), port))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// What the clients saw during one phase.
#[derive(Default, Debug)]
struct Phase {
    calls: u64,
    failures: Vec<String>,
    slowest: Duration,
}

/// Reads random scores from 4 clients for `length`.
async fn traffic(app: &TestApp, ids: &[String], length: Duration) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let mut scoring = app.scoring();
        let ids = ids.to_vec();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c);
            let mut phase = Phase::default();
            while !stop.load(Ordering::Relaxed) {
                let id = ids[rng.random_range(0..ids.len())].clone();
                let started = Instant::now();
                let result = scoring
                    .get_score(spb::GetScoreRequest { customer_id: id })
                    .await;
                phase.calls += 1;
                phase.slowest = phase.slowest.max(started.elapsed());
                if let Err(status) = result {
                    phase
                        .failures
                        .push(format!("{:?}: {}", status.code(), status.message()));
                }
            }
            phase
        }));
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Phase::default();
    for client in clients {
        let p = client.await.unwrap();
        all.calls += p.calls;
        all.failures.extend(p.failures);
        all.slowest = all.slowest.max(p.slowest);
    }
    all
}

fn cache_counters(text: &str) -> (f64, f64) {
    (
        metric(text, "patron_cache_hits_total").unwrap_or(0.0),
        metric(text, "patron_cache_fallbacks_total").unwrap_or(0.0),
    )
}

async fn redis_hung_killed_and_restarted_under_traffic(backend: Backend) {
    let Some((mut redis, port)) = private_redis() else {
        return;
    };
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.redis.url = Some(format!("redis://127.0.0.1:{port}").into());
        s.redis.response_timeout_ms = 50;
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
    else {
        return;
    };
    let ids = patron_tests::seed_buyers(&app, 200, 11).await;
    patron_tests::score_everyone(&app, &ids).await;

    let healthy = traffic(&app, &ids, Duration::from_secs(2)).await;
    let (hits_before, fallbacks_before) = cache_counters(&app.metrics().await);
    assert!(hits_before > 0.0, "the cache serves hits while Redis is up");

    redis.signal("-STOP");
    let hung = traffic(&app, &ids, Duration::from_secs(2)).await;
    redis.signal("-CONT");

    redis.kill();
    let dead = traffic(&app, &ids, Duration::from_secs(2)).await;
    let (_, fallbacks_dead) = cache_counters(&app.metrics().await);
    assert!(
        fallbacks_dead > fallbacks_before,
        "calls fell back to the store while Redis was down"
    );

    let _restarted = RedisProcess::start(port).expect("restart redis-server");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recovered;
    loop {
        recovered = traffic(&app, &ids, Duration::from_millis(500)).await;
        let (hits, _) = cache_counters(&app.metrics().await);
        if hits > hits_before + 10.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache was not used again after Redis came back"
        );
    }

    eprintln!(
        "faults | calls | failures | slowest\n\
         healthy | {} | {} | {:?}\n\
         redis hung (SIGSTOP) | {} | {} | {:?}\n\
         redis killed | {} | {} | {:?}\n\
         redis restarted | {} | {} | {:?}",
        healthy.calls,
        healthy.failures.len(),
        healthy.slowest,
        hung.calls,
        hung.failures.len(),
        hung.slowest,
        dead.calls,
        dead.failures.len(),
        dead.slowest,
        recovered.calls,
        recovered.failures.len(),
        recovered.slowest,
    );
    for (name, phase) in [
        ("healthy", &healthy),
        ("hung", &hung),
        ("dead", &dead),
        ("recovered", &recovered),
    ] {
        assert!(phase.calls > 0, "{name}: no calls made");
        assert!(
            phase.failures.is_empty(),
            "{name}: {:?}",
            &phase.failures[..phase.failures.len().min(5)]
        );
        // A bound, not a benchmark: no call waits on the dead cache for
        // long (the Redis timeout is 50 ms; this allows a very busy machine).
        assert!(
            phase.slowest < Duration::from_secs(3),
            "{name}: a call took {:?}",
            phase.slowest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_faults_on_sqlite() {
    redis_hung_killed_and_restarted_under_traffic(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_faults_on_postgres() {
    redis_hung_killed_and_restarted_under_traffic(Backend::Postgres).await;
}

/// A `GetScore` miss whose cache read failed goes to the store without
/// asking the cache again (the second look is for a load another call just
/// finished, and a cache that failed has nothing to show): with Redis
/// unreachable one call costs the failed read and the failed write-back,
/// two fallbacks, not three.
#[tokio::test]
async fn a_score_read_asks_a_failed_cache_once() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.redis.url = Some(format!("redis://127.0.0.1:{}", free_port()).into());
        s.cache.near_ttl_ms = 0;
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
    else {
        return;
    };
    // Enough buyers for the models to fit.
    let ids = patron_tests::seed_buyers(&app, 200, 3).await;
    patron_tests::score_everyone(&app, &ids).await;
    let fallbacks = async || cache_counters(&app.metrics().await).1;
    for id in &ids[..5] {
        let before = fallbacks().await;
        let score = app
            .scoring()
            .get_score(spb::GetScoreRequest {
                customer_id: id.clone(),
            })
            .await
            .expect("the store answers")
            .into_inner()
            .score;
        assert_eq!(&score.customer_id, id);
        assert_eq!(fallbacks().await - before, 2.0, "read and write-back only");
    }
}

/// A throwaway PostgreSQL cluster (initdb + pg_ctl) on its own port, run
/// as the `postgres` user when the tests run as root (PostgreSQL refuses
/// root).
struct PgCluster {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()?;
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .ok()?
            .stdout
            .starts_with(b"0\n");
        let dir = tempfile::tempdir().ok()?;
        if as_postgres {
            Command::new("chown")
                .args(["postgres:", dir.path().to_str()?])
                .status()
                .ok()?;
        }
        let cluster = Self {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        let data = cluster.dir.path().join("data");
        let ok = cluster
            .run(
                "initdb",
                &[
                    "-D",
                    data.to_str()?,
                    "-U",
                    "root",
                    "--auth=trust",
                    "--no-sync",
                ],
            )
            .success();
        (ok && cluster.pg_ctl_start()).then_some(cluster)
    }

    fn run(&self, tool: &str, args: &[&str]) -> std::process::ExitStatus {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run a PostgreSQL tool")
    }

    fn pg_ctl_start(&self) -> bool {
        let data = self.dir.path().join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                self.dir.path().join("log").to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        )
        .success()
    }

    /// `pg_ctl stop -m immediate`: the server dies without a checkpoint,
    /// as in a crash; restart runs crash recovery.
    fn crash(&self) {
        let data = self.dir.path().join("data");
        assert!(
            self.run(
                "pg_ctl",
                &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]
            )
            .success()
        );
    }

    fn url(&self) -> String {
        format!("postgres://root@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

/// PostgreSQL crashes (`pg_ctl stop -m immediate`) under write load and
/// comes back: calls meanwhile fail UNAVAILABLE (never INTERNAL), the pool
/// recovers, every acknowledged write is there, retries of the failed ones
/// converge, the outbox holds exactly the stored transactions, and
/// scoring's follower counts each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_under_write_load_loses_nothing() {
    use patron_tests::pb::{common::Money, profile as ppb};
    let Some(pg) = PgCluster::start() else {
        skip("PostgreSQL crash test", "initdb / pg_ctl are not available");
        return;
    };
    let mut settings =
        patron_tests::test_settings(patron_store::DatabaseSettings::with_url(pg.url()));
    settings.database.acquire_timeout_ms = 1_000;
    settings.database.connect_timeout_ms = 1_000;
    let app = TestApp::start_with_settings(Backend::Postgres, settings).await;

    let mut customers = Vec::new();
    for c in 0..10 {
        customers.push(
            app.profile()
                .create_customer(ppb::CreateCustomerRequest {
                    customer: Some(ppb::Customer {
                        external_id: format!("pg-{c}"),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .id,
        );
    }
    let now = chrono::Utc::now().timestamp();
    let batch = move |customers: &[String], worker: usize, n: usize| -> Vec<ppb::Transaction> {
        (0..10)
            .map(|k| ppb::Transaction {
                id: format!("w{worker}-{n}-{k}"),
                customer_id: customers[(n + k) % customers.len()].clone(),
                occurred_at: Some(prost_types::Timestamp {
                    seconds: now - 86_400 * (k as i64 + 1),
                    nanos: 0,
                }),
                amount: Some(Money {
                    currency_code: "EUR".into(),
                    units: 5,
                    nanos: 0,
                }),
                quantity: 1,
                category: "books".into(),
                region: "East".into(),
                ..Default::default()
            })
            .collect()
    };

    // Writers: (batch, outcome, sent at).
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for worker in 0..4 {
        let mut profile = app.profile();
        let customers = customers.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut log = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let transactions = batch(&customers, worker, n);
                let mut request = tonic::Request::new(ppb::RecordTransactionsRequest {
                    transactions: transactions.clone(),
                });
                request.set_timeout(Duration::from_secs(5));
                let outcome = profile
                    .record_transactions(request)
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code());
                if outcome.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                log.push((transactions, outcome, Instant::now()));
                n += 1;
            }
            log
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let crashed_at = Instant::now();
    pg.crash();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pg.pg_ctl_start(), "PostgreSQL restarts");
    let restarted_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut log = Vec::new();
    for w in writers {
        log.extend(w.await.unwrap());
    }

    let acked: HashSet<String> = log
        .iter()
        .filter(|(_, o, _)| o.is_ok())
        .flat_map(|(b, _, _)| b.iter().map(|t| t.id.clone()))
        .collect();
    let attempted: HashSet<String> = log
        .iter()
        .flat_map(|(b, _, _)| b.iter().map(|t| t.id.clone()))
        .collect();
    let failed: Vec<_> = log.iter().filter(|(_, o, _)| o.is_err()).collect();
    let codes: HashSet<_> = failed.iter().map(|(_, o, _)| o.unwrap_err()).collect();
    let ok_after = log
        .iter()
        .filter(|(_, o, at)| o.is_ok() && *at > restarted_at)
        .count();
    eprintln!(
        "postgres crash | {} calls, {} acknowledged, {} failed ({codes:?}); {} ok after restart ({:?} after the crash)",
        log.len(),
        log.len() - failed.len(),
        failed.len(),
        ok_after,
        restarted_at - crashed_at
    );
    assert!(!failed.is_empty(), "calls failed while PostgreSQL was down");
    for code in &codes {
        assert!(
            matches!(
                code,
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ),
            "{code:?} while PostgreSQL was down"
        );
    }
    assert!(ok_after > 0, "the pool recovered after the restart");

    let stored = async || {
        let mut ids = HashSet::new();
        for c in &customers {
            let mut token = String::new();
            loop {
                let page = app
                    .profile()
                    .list_transactions(ppb::ListTransactionsRequest {
                        customer_id: c.clone(),
                        page_size: 1000,
                        page_token: token,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                ids.extend(page.transactions.into_iter().map(|t| t.id));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        ids
    };
    let before_retry = stored().await;
    assert!(
        acked.is_subset(&before_retry),
        "acknowledged writes lost: {:?}",
        acked.difference(&before_retry).take(5).collect::<Vec<_>>()
    );
    assert!(before_retry.is_subset(&attempted), "phantom writes");

    // Retrying the failed calls (the same transaction ids) converges.
    for (transactions, _, _) in &failed {
        app.profile()
            .record_transactions(ppb::RecordTransactionsRequest {
                transactions: transactions.clone(),
            })
            .await
            .expect("retry after recovery");
    }
    let after_retry = stored().await;
    assert_eq!(
        after_retry, attempted,
        "after retries every attempted write is stored once"
    );

    // The outbox holds exactly the stored transactions.
    let mut feed_ids = Vec::new();
    let mut stream = app
        .profile()
        .stream_changes(ppb::StreamChangesRequest {
            after_sequence: 0,
            max_batch_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), stream.message())
        .await
        .unwrap_or(Ok(None))
    {
        feed_ids.extend(message.events.into_iter().filter_map(|e| match e.change {
            Some(ppb::change_event::Change::Transaction(t)) => Some(t.id),
            _ => None,
        }));
        if feed_ids.len() >= attempted.len() {
            break;
        }
    }
    let feed_set: HashSet<String> = feed_ids.iter().cloned().collect();
    assert_eq!(
        feed_ids.len(),
        feed_set.len(),
        "no transaction twice in the feed"
    );
    assert_eq!(feed_set, attempted, "feed and business rows agree");

    // Scoring's follower resumed across the crash: each transaction counted once.
    let request = spb::GetProductDistributionReportRequest {
        start_time: Some(prost_types::Timestamp {
            seconds: now - 86_400 * 30,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: now + 86_400,
            nanos: 0,
        }),
        period: patron_tests::pb::common::Period::Year as i32,
        by_channel: false,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = app
            .scoring()
            .get_product_distribution_report(request)
            .await
            .unwrap()
            .into_inner();
        let counted: i64 = report.rows.iter().map(|r| r.transactions).sum();
        if counted == attempted.len() as i64 {
            break;
        }
        assert!(
            counted < attempted.len() as i64,
            "scoring counted {counted} > {} transactions",
            attempted.len()
        );
        assert!(
            Instant::now() < deadline,
            "scoring's rollup stuck at {counted} of {}",
            attempted.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(app);
}

/// A TCP proxy in front of PostgreSQL that delays everything the server
/// sends back by `delay_ms`: a slow database, as the services see it.
struct SlowProxy {
    port: u16,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl SlowProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = delay_ms.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    let _ = server_write.shutdown().await;
                });
                let delay = delay.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match server_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let ms = delay.load(Ordering::Relaxed);
                        if ms > 0 {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { port, delay_ms }
    }

    fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

/// A slow database: calls end at their deadline with DEADLINE_EXCEEDED
/// (not when the database finally answers), their queries do not linger on
/// the server, and the pool serves again once the database is fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_database_is_cut_off_at_the_deadline_and_the_pool_recovers() {
    use patron_tests::pb::profile as ppb;
    use sea_orm::{ConnectionTrait, Database, Statement};
    let Some(server) = patron_tests::postgres_url() else {
        skip(
            "slow database test",
            "DATABASE_URL is not a postgres:// URL",
        );
        return;
    };
    let Some((database, _)) = patron_tests::fresh_database(Backend::Postgres).await else {
        return;
    };
    let direct = patron_store::expose_url(&database).to_owned();
    let db_name = direct
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let upstream: std::net::SocketAddr = {
        let host_port = server.split('@').nth(1).unwrap().split('/').next().unwrap();
        tokio::net::lookup_host(host_port)
            .await
            .unwrap()
            .next()
            .unwrap()
    };
    let proxy = SlowProxy::start(upstream).await;
    let via_proxy = direct.replacen(
        &format!("{}:{}", upstream.ip(), upstream.port()),
        &format!("127.0.0.1:{}", proxy.port),
        1,
    );
    assert_ne!(via_proxy, direct, "the URL points at the proxy");
    let mut settings =
        patron_tests::test_settings(patron_store::DatabaseSettings::with_url(via_proxy));
    settings.database.max_connections = 4;
    settings.database.acquire_timeout_ms = 2_000;
    settings.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = TestApp::start_with_settings(Backend::Postgres, settings).await;
    let customer = app
        .profile()
        .create_customer(ppb::CreateCustomerRequest {
            customer: Some(ppb::Customer {
                external_id: "slow-1".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    let get = |deadline: Duration| {
        let mut profile = app.profile();
        let id = customer.id.clone();
        async move {
            let mut request = tonic::Request::new(ppb::GetCustomerRequest { id });
            request.set_timeout(deadline);
            let started = Instant::now();
            let result = profile.get_customer(request).await;
            (result.map(|_| ()).map_err(|s| s.code()), started.elapsed())
        }
    };

    // Every answer now takes 3 s; calls allow 1 s. More calls than pooled
    // connections, so some wait for a connection.
    proxy.set_delay(Duration::from_secs(3));
    let slow = futures::future::join_all((0..12).map(|_| get(Duration::from_secs(1)))).await;
    for (result, took) in &slow {
        // The server answers DEADLINE_EXCEEDED just before the deadline;
        // tonic's client reports its own timer as CANCELLED should that
        // fire first on a busy machine.
        assert!(
            matches!(
                result,
                Err(tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
            ),
            "{slow:?}"
        );
        // Ended by the deadline, well before the database could answer.
        assert!(*took < Duration::from_millis(2_500), "a call took {took:?}");
    }
    let text = app.metrics().await;
    let series = "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"patron.profile.v1.CustomerProfileService\",grpc_method=\"GetCustomer\",grpc_code=\"DeadlineExceeded\"}";
    assert_eq!(
        patron_tests::metric(&text, series),
        Some(12.0),
        "the server ended each call at its deadline"
    );

    // Fast again: the pool serves again.
    proxy.set_delay(Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if get(Duration::from_secs(5)).await.0.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the pool did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = futures::future::join_all((0..12).map(|_| get(Duration::from_secs(5)))).await;
    assert!(recovered.iter().all(|(r, _)| r.is_ok()), "{recovered:?}");

    // No query of the cancelled calls is still running, and the pool stays
    // within its size.
    let admin = Database::connect(server.as_str()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = admin
            .query_all_raw(Statement::from_string(
                admin.get_database_backend(),
                format!(
                    "SELECT count(*) FILTER (WHERE state = 'active')::bigint, count(*)::bigint FROM pg_stat_activity WHERE datname = '{db_name}'"
                ),
            ))
            .await
            .unwrap();
        let active: i64 = rows[0].try_get_by_index(0).unwrap();
        let connections: i64 = rows[0].try_get_by_index(1).unwrap();
        assert!(
            connections <= 4 + 1,
            "{connections} connections for a pool of 4"
        );
        if active == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{active} queries still active after their calls ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = admin.close().await;
    drop(app);
}

/// The server is restarted while a consumer is following the change feed:
/// the stream ends, the consumer reconnects (to the new process) from the
/// last sequence it saw, and across both streams it receives every change
/// exactly once, in order, including those written while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_consumer_resumes_across_a_server_restart() {
    use patron_tests::pb::{common::Money, profile as ppb};
    use tokio_stream::StreamExt;
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let customer = app
        .profile()
        .create_customer(ppb::CreateCustomerRequest {
            customer: Some(ppb::Customer {
                external_id: "follower-1".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let write = |app: &TestApp, from: usize, to: usize| {
        let mut profile = app.profile();
        let id = customer.id.clone();
        async move {
            for n in from..to {
                profile
                    .record_transactions(ppb::RecordTransactionsRequest {
                        transactions: vec![ppb::Transaction {
                            id: format!("follow-{n}"),
                            customer_id: id.clone(),
                            occurred_at: Some(prost_types::Timestamp {
                                seconds: 1_700_000_000 + n as i64,
                                nanos: 0,
                            }),
                            amount: Some(Money {
                                currency_code: "EUR".into(),
                                units: 1,
                                nanos: 0,
                            }),
                            ..Default::default()
                        }],
                    })
                    .await
                    .unwrap();
            }
        }
    };
    write(&app, 0, 30).await;

    // Follow from the start; read some, then the server goes away mid-stream.
    let mut seen: Vec<(i64, String)> = Vec::new();
    let record = |seen: &mut Vec<(i64, String)>, events: Vec<ppb::ChangeEvent>| {
        seen.extend(events.into_iter().map(|e| {
            let tx = match e.change {
                Some(ppb::change_event::Change::Transaction(t)) => t.id,
                _ => String::new(),
            };
            (e.sequence, tx)
        }));
    };
    let mut stream = app
        .profile()
        .stream_changes(ppb::StreamChangesRequest {
            after_sequence: 0,
            max_batch_size: 7,
        })
        .await
        .unwrap()
        .into_inner();
    while seen.iter().filter(|(_, id)| !id.is_empty()).count() < 14 {
        let message = stream.next().await.expect("stream open").expect("message");
        record(&mut seen, message.events);
    }
    let app = app.restart().await;
    // The old stream ends (cleanly or with an error), never with a duplicate.
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(5), stream.next()).await
    {
        record(&mut seen, message.events);
    }
    write(&app, 30, 60).await;

    // Reconnect from the last sequence seen.
    let last = seen.last().unwrap().0;
    let mut resumed = app
        .profile()
        .stream_changes(ppb::StreamChangesRequest {
            after_sequence: last,
            max_batch_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen
        .iter()
        .filter(|(_, id)| id.starts_with("follow-"))
        .count()
        < 60
    {
        assert!(
            Instant::now() < deadline,
            "the resumed stream did not deliver everything: {} transactions, {:?}",
            seen.iter()
                .filter(|(_, id)| id.starts_with("follow-"))
                .count(),
            seen.iter()
                .filter(|(_, id)| !id.starts_with("follow-"))
                .collect::<Vec<_>>()
        );
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), resumed.next()).await
        else {
            continue;
        };
        record(&mut seen, message.unwrap().events);
    }
    let sequences: Vec<i64> = seen.iter().map(|(s, _)| *s).collect();
    assert!(
        sequences.windows(2).all(|w| w[1] == w[0] + 1),
        "gap-free, in order, once: {sequences:?}"
    );
    let ids: HashSet<&String> = seen
        .iter()
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
        .collect();
    assert_eq!(ids.len(), 60, "every transaction exactly once");
}

/// With Redis hung, reads queued behind a round trip that never returns
/// share its deadline: each caller fails once, within the response
/// timeout of its arrival, and is counted once as a fallback.
#[tokio::test]
async fn a_hung_redis_costs_each_queued_read_one_timeout() {
    use patron_cache::{CacheError, CacheSettings, RedisCache, RedisSettings, ScoreCache};
    let Some((redis, port)) = private_redis() else {
        return;
    };
    let settings = RedisSettings {
        url: Some(format!("redis://127.0.0.1:{port}").into()),
        response_timeout_ms: 1_000,
        ..RedisSettings::default()
    };
    let cache = RedisCache::connect_in_background(
        &settings,
        &CacheSettings {
            near_ttl_ms: 0,
            ..CacheSettings::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache.is_connected() {
        assert!(Instant::now() < deadline, "redis did not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cache.get("warm").await.unwrap(), None);

    redis.signal("-STOP");
    let started = Instant::now();
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    let answers = futures::future::join_all(keys.iter().map(|k| cache.get(k))).await;
    let took = started.elapsed();
    redis.signal("-CONT");
    for answer in &answers {
        assert!(matches!(answer, Err(CacheError::Timeout)), "{answer:?}");
    }
    let stats = cache.stats();
    assert_eq!(
        stats.errors.load(Ordering::Relaxed),
        50,
        "one fallback per caller"
    );
    // The first read's trip, and at most one more (for the queued reads,
    // with what was left of their time).
    assert!(stats.redis_reads.load(Ordering::Relaxed) <= 3);
    // A bound, not a benchmark: one timeout (1 s) for all. Queued reads
    // given a fresh timeout of their own would take 2 s.
    assert!(took < Duration::from_millis(1_800), "took {took:?}");
}
