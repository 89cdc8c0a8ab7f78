//! The `patron` binary as a user runs it: a real server process, the client,
//! demo, import and privacy subcommands, and shutdown on SIGTERM.

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

const PATRON: &str = env!("CARGO_BIN_EXE_patron");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs `patron` with a clean Patron environment in `dir`.
fn patron(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(PATRON);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env("PATRON_LOG__FORMAT", "json");
    for (key, _) in std::env::vars() {
        if key.starts_with("PATRON_") && key != "PATRON_LOG__FORMAT" {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let out = patron(dir, args).output().expect("run patron");
    assert!(
        out.status.success(),
        "patron {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Server {
    child: Child,
    endpoint: String,
}

impl Server {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    fn start_with(dir: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = patron(dir, &["serve", "--addr", &format!("127.0.0.1:{port}")])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = patron(dir, &["health", "--endpoint", &endpoint])
                .output()
                .expect("health");
            if health.status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "server not healthy within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, endpoint }
    }

    /// SIGTERM, then the exit status within `timeout`.
    fn terminate(self, timeout: Duration) -> std::process::ExitStatus {
        self.signal_term();
        self.wait(timeout)
    }

    fn signal_term(&self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
    }

    fn wait(mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn serve_seed_import_export_erase_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let server = Server::start(dir);
    let e = server.endpoint.clone();
    assert!(
        dir.join("patron.db").exists(),
        "SQLite file in the working directory by default"
    );

    let seeded = stdout(&run(
        dir,
        &["demo", "seed", "--customers", "120", "--endpoint", &e],
    ));
    assert!(seeded.contains("120 customers"), "{seeded}");
    let again = stdout(&run(
        dir,
        &["demo", "seed", "--customers", "120", "--endpoint", &e],
    ));
    assert!(
        again.contains("0 customers, 0 transactions"),
        "seeding twice is idempotent: {again}"
    );

    let listed = stdout(&run(
        dir,
        &[
            "customer",
            "list",
            "--filter",
            "external_id = \"demo-00007\"",
            "--endpoint",
            &e,
        ],
    ));
    assert!(
        listed.contains("demo-00007") && listed.contains("(1 of 1 matching)"),
        "{listed}"
    );

    std::fs::write(
        dir.join("customers.csv"),
        "external_id,display_name,email,region,tags,consent_email\n\
         cli-1,Grace Hopper,grace@example.com,East,vip,yes\n\
         cli-2,Bad Email,not-an-email,West,,no\n",
    )
    .unwrap();
    let first = stdout(&run(
        dir,
        &["import", "customers", "customers.csv", "--endpoint", &e],
    ));
    assert!(
        first.contains("1 accepted, 0 already present, 1 rejected"),
        "{first}"
    );
    assert!(first.contains("line 3: email"), "{first}");
    let second = stdout(&run(
        dir,
        &["import", "customers", "customers.csv", "--endpoint", &e],
    ));
    assert!(
        second.contains("0 accepted, 1 already present, 1 rejected"),
        "{second}"
    );

    std::fs::write(
        dir.join("transactions.csv"),
        "id,customer_external_id,occurred_at,amount,currency,category\n\
         cli-t1,cli-1,2026-01-05,19.99,EUR,books\n\
         cli-t2,cli-1,2026-02-11T10:30:00Z,120.00,EUR,electronics\n\
         cli-t3,nobody,2026-03-01,5.00,EUR,books\n",
    )
    .unwrap();
    let tx = stdout(&run(
        dir,
        &[
            "import",
            "transactions",
            "transactions.csv",
            "--endpoint",
            &e,
        ],
    ));
    assert!(
        tx.contains("2 accepted, 0 already present, 1 rejected") && tx.contains("line 4"),
        "{tx}"
    );
    let tx = stdout(&run(
        dir,
        &[
            "import",
            "transactions",
            "transactions.csv",
            "--endpoint",
            &e,
        ],
    ));
    assert!(tx.contains("0 accepted, 2 already present"), "{tx}");

    let listed = stdout(&run(
        dir,
        &[
            "customer",
            "list",
            "--filter",
            "external_id = \"cli-1\"",
            "--endpoint",
            &e,
        ],
    ));
    let id = listed
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("a row")
        .to_owned();
    let export = stdout(&run(dir, &["customer", "export", &id, "--endpoint", &e]));
    assert!(
        export.contains("grace@example.com") && export.contains("\"amount\": \"19.99\""),
        "{export}"
    );

    let erased = stdout(&run(
        dir,
        &[
            "customer",
            "erase",
            &id,
            "--reason",
            "cli test",
            "--endpoint",
            &e,
        ],
    ));
    assert!(erased.contains(&format!("erased {id}")), "{erased}");
    let after = stdout(&run(dir, &["customer", "get", &id, "--endpoint", &e]));
    assert!(
        !after.contains("grace@example.com") && after.contains("erase_time"),
        "{after}"
    );

    let missing = patron(dir, &["customer", "get", "no-such-id", "--endpoint", &e])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));

    let status = server.terminate(Duration::from_secs(25));
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = patron(dir.path(), &["serve"])
        .env("PATRON_SERVER__REQUEST_TIMEOUT_MS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.request_timeout_ms"), "{stderr}");

    let out = patron(dir.path(), &["serve"])
        .env("DATABASE_URL", "sqlite:///no/such/dir/patron.db")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/no/such/dir") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// SIGTERM while clients keep writing: calls the server had accepted
/// finish OK (none fails), later ones are refused with UNAVAILABLE, the
/// process exits 0 within the grace period, and every acknowledged write is
/// there after a restart.
#[test]
fn sigterm_under_load_drains_in_flight_calls_and_exits_zero() {
    use patron_proto::profile::{
        Customer, ListCustomersRequest, UpsertCustomersRequest,
        customer_profile_service_client::CustomerProfileServiceClient,
    };

    const WORKERS: usize = 6;
    const BATCH: usize = 200;
    let grace = Duration::from_secs(10);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[("PATRON_SERVER__SHUTDOWN_GRACE_SECS", "10")]);
    let endpoint = server.endpoint.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    struct Call {
        started: Instant,
        finished: Instant,
        result: Result<usize, tonic::Code>,
    }
    let (calls, term_at) = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let mut client = CustomerProfileServiceClient::new(channel.clone());
            let stop = stop.clone();
            workers.push(tokio::spawn(async move {
                let mut calls = Vec::new();
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let customers = (0..BATCH)
                        .map(|i| Customer {
                            external_id: format!("load-{w}-{n}-{i}"),
                            region: "East".into(),
                            ..Default::default()
                        })
                        .collect();
                    let started = Instant::now();
                    let result = client
                        .upsert_customers(UpsertCustomersRequest { customers })
                        .await
                        .map(|r| r.into_inner().customers.len())
                        .map_err(|s| s.code());
                    let failed = result.is_err();
                    calls.push(Call {
                        started,
                        finished: Instant::now(),
                        result,
                    });
                    if failed {
                        break;
                    }
                }
                calls
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let term_at = Instant::now();
        server.signal_term();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut calls = Vec::new();
        for w in workers {
            calls.extend(w.await.unwrap());
        }
        (calls, term_at)
    });
    let status = server.wait(grace + Duration::from_secs(5));
    assert!(status.success(), "SIGTERM under load exits 0: {status:?}");
    assert!(term_at.elapsed() < grace + Duration::from_secs(5));

    // Calls in progress at SIGTERM (sent well before it, answered after):
    // the server had them, so they must all succeed.
    let margin = Duration::from_millis(20);
    let in_flight: Vec<_> = calls
        .iter()
        .filter(|c| c.started + margin < term_at && c.finished > term_at)
        .collect();
    assert!(
        !in_flight.is_empty(),
        "the load kept calls in flight at SIGTERM"
    );
    for c in &in_flight {
        assert_eq!(
            c.result,
            Ok(BATCH),
            "an in-flight call failed during shutdown"
        );
    }
    // Later calls were refused: UNAVAILABLE from the server, or CANCELLED
    // by the client's own transport when the connection closed before the
    // request was sent. Neither is a call the server had accepted (the
    // exact count below proves none of them took effect).
    for c in &calls {
        if let Err(code) = c.result {
            assert!(
                matches!(code, tonic::Code::Unavailable | tonic::Code::Cancelled),
                "unexpected {code:?} during shutdown"
            );
            assert!(
                c.started + margin > term_at || c.finished < term_at,
                "a call in flight at SIGTERM failed"
            );
        }
    }
    let acknowledged: usize = calls.iter().filter_map(|c| c.result.ok()).sum();
    assert!(acknowledged > 0);

    // Every acknowledged customer is stored, and nothing else: a refused
    // call wrote nothing, an accepted one was answered.
    let server = Server::start(dir.path());
    let stored = runtime.block_on(async {
        CustomerProfileServiceClient::connect(server.endpoint.clone())
            .await
            .unwrap()
            .list_customers(ListCustomersRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .total_size as usize
    });
    assert_eq!(stored, acknowledged, "stored vs acknowledged customers");
    assert!(server.terminate(Duration::from_secs(25)).success());
}

/// `patron bench scores` end to end on a small population: it seeds, fits,
/// recomputes, then measures every read path with its own HTTP/2 client,
/// which fails the run if any answer is not the score asked for.
#[test]
fn bench_scores_seeds_measures_and_checks_every_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let out = run(
        dir.path(),
        &[
            "bench",
            "scores",
            "--customers",
            "300",
            "--seconds",
            "1",
            "--in-flight",
            "8",
            "--endpoint",
            &server.endpoint,
        ],
    );
    let out = stdout(&out);
    for line in [
        "seeded 300 customers",
        "RecomputeScores of 300 customers",
        "floor: grpc.health.v1 Check, 1 in flight",
        "GetScore, 1 in flight",
        "GetScore, 8 in flight",
        "BatchGetScores of 100 ids",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    // Every measurement made calls.
    assert!(!out.contains(": 0 calls"), "{out}");
}
