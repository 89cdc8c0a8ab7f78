//! Operations: authentication (tokens, JWT), metrics, rate limits, load
//! shedding and TLS, over real gRPC against a running server. (Shutdown of
//! the real binary under SIGTERM is in `crates/patron/tests/cli.rs`.)

use std::{path::Path, time::Duration};

use patron_runtime::ServiceKind;
use patron_tests::{Backend, TestApp, metric, pb::profile as profile_pb};
use secrecy::SecretString;
use tonic::{Code, Request};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_types::StatusExt;

const TOKEN: &str = "s3cret-token-for-tests";

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

fn get(id: &str) -> profile_pb::GetCustomerRequest {
    profile_pb::GetCustomerRequest { id: id.into() }
}

fn new_customer(external_id: &str) -> profile_pb::CreateCustomerRequest {
    profile_pb::CreateCustomerRequest {
        customer: Some(profile_pb::Customer {
            external_id: external_id.into(),
            region: "East".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

/// Waits until campaign's view (fed by its follower of the profile feed, a
/// call between services) holds the customer; `how` says which path failed.
async fn campaign_sees(app: &TestApp, customer_id: &str, token: Option<&str>, how: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let request = patron_tests::pb::campaign::PreviewSegmentRequest {
            expression: "customer.region = \"East\"".into(),
            sample_size: 5,
        };
        let request = match token {
            Some(token) => with_token(request, token),
            None => Request::new(request),
        };
        let preview = app
            .campaign()
            .preview_segment(request)
            .await
            .expect("preview")
            .into_inner();
        if preview.sample.iter().any(|c| c.customer_id == customer_id) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "campaign never saw the customer {how}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_every_rpc_but_health() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.auth.tokens = vec![SecretString::from("other-token"), SecretString::from(TOKEN)];
    })
    .await
    else {
        return;
    };
    let mut profile = app.profile();

    let missing = profile.get_customer(get("nobody")).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    assert!(missing.message().contains("Bearer"), "{missing:?}");

    let wrong = profile
        .get_customer(with_token(get("nobody"), "guess"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(
        !wrong.message().contains("guess"),
        "the credential is not echoed"
    );

    let mut malformed = Request::new(get("nobody"));
    malformed
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    assert_eq!(
        profile.get_customer(malformed).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // A valid token reaches the handler: NOT_FOUND is the handler's answer.
    let found = profile
        .get_customer(with_token(get("nobody"), TOKEN))
        .await
        .unwrap_err();
    assert_eq!(found.code(), Code::NotFound);
    let created = profile
        .create_customer(with_token(new_customer("auth-1"), TOKEN))
        .await
        .expect("create with a token")
        .into_inner();

    // Health needs no credentials (probes).
    let health = app
        .health()
        .check(HealthCheckRequest {
            service: ServiceKind::Profile.grpc_name().into(),
        })
        .await
        .expect("health is open")
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    // Services call each other with this process's token: campaign's
    // follower reads the profile feed and sees the customer.
    campaign_sees(
        &app,
        &created.id,
        Some(TOKEN),
        "through the authenticated feed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_issuer_audience_and_expiry_are_checked() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    const SECRET: &str = "a-shared-hs256-secret-of-enough-length";
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.auth.jwt = Some(patron_runtime::config::JwtSettings {
            issuer: "https://issuer.example".into(),
            audience: "patron".into(),
            algorithm: "HS256".into(),
            key: SecretString::from(SECRET),
            leeway_secs: 0,
        });
        // The services' own calls to each other use a static peer token.
        s.auth.peer_token = Some(SecretString::from(TOKEN));
    })
    .await
    else {
        return;
    };
    let now = chrono::Utc::now().timestamp();
    let mint = |iss: &str, aud: &str, exp: i64, secret: &str| {
        encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({ "iss": iss, "aud": aud, "exp": exp, "sub": "svc-a" }),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let mut profile = app.profile();
    let call = |token: String| {
        let mut profile = profile.clone();
        async move {
            profile
                .get_customer(with_token(get("nobody"), &token))
                .await
        }
    };

    let ok = call(mint("https://issuer.example", "patron", now + 600, SECRET)).await;
    assert_eq!(
        ok.unwrap_err().code(),
        Code::NotFound,
        "a valid JWT reaches the handler"
    );

    let forged = call(mint(
        "https://issuer.example",
        "patron",
        now + 600,
        "not-the-key",
    ))
    .await;
    assert_eq!(forged.unwrap_err().code(), Code::Unauthenticated);

    let expired = call(mint("https://issuer.example", "patron", now - 600, SECRET))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert!(expired.message().contains("expired"), "{expired:?}");

    let other_audience = call(mint("https://issuer.example", "billing", now + 600, SECRET)).await;
    assert_eq!(other_audience.unwrap_err().code(), Code::PermissionDenied);
    let other_issuer = call(mint("https://evil.example", "patron", now + 600, SECRET)).await;
    assert_eq!(other_issuer.unwrap_err().code(), Code::PermissionDenied);

    let garbage = profile
        .get_customer(with_token(get("nobody"), "not.a.jwt"))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::Unauthenticated);
}

async fn metrics_count_calls_by_method_and_code(app: TestApp) {
    let mut profile = app.profile();
    profile
        .create_customer(new_customer("metrics-1"))
        .await
        .expect("create");
    for _ in 0..2 {
        let err = profile.get_customer(get("nobody")).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    // A streaming call: the code is counted when the stream ends.
    let mut stream = profile
        .stream_changes(profile_pb::StreamChangesRequest {
            after_sequence: 0,
            max_batch_size: 0,
        })
        .await
        .expect("stream")
        .into_inner();
    let _ = stream.message().await.expect("first batch");
    drop(stream);

    let svc = ServiceKind::Profile.grpc_name();
    // The followers and scrapes run concurrently; poll until the
    // cancelled stream's outcome has been recorded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = app.metrics().await;
        let cancelled = format!(
            "grpc_server_handled_total{{grpc_type=\"server_stream\",grpc_service=\"{svc}\",grpc_method=\"StreamChanges\",grpc_code=\"Canceled\"}}"
        );
        if metric(&text, &cancelled).is_some_and(|v| v >= 1.0) {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Canceled stream in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let series = |name: &str, method: &str, extra: &str| {
        format!(
            "{name}{{grpc_type=\"unary\",grpc_service=\"{svc}\",grpc_method=\"{method}\"{extra}}}"
        )
    };
    assert_eq!(
        metric(
            &text,
            &series("grpc_server_started_total", "GetCustomer", "")
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &series(
                "grpc_server_handled_total",
                "GetCustomer",
                ",grpc_code=\"NotFound\""
            )
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &series(
                "grpc_server_handled_total",
                "CreateCustomer",
                ",grpc_code=\"OK\""
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &series("grpc_server_handling_seconds_count", "GetCustomer", "")
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "grpc_server_handling_seconds_bucket{{le=\"+Inf\",grpc_type=\"unary\",grpc_service=\"{svc}\",grpc_method=\"GetCustomer\"}} 2"
        )) || text.contains(&format!(
            "grpc_server_handling_seconds_bucket{{grpc_type=\"unary\",grpc_service=\"{svc}\",grpc_method=\"GetCustomer\",le=\"+Inf\"}} 2"
        )),
        "{text}"
    );
    for name in [
        "patron_cache_hits_total",
        "patron_cache_misses_total",
        "patron_cache_fallbacks_total",
        "patron_db_pool_connections",
        "patron_db_pool_idle",
    ] {
        assert!(metric(&text, name).is_some(), "{name} missing:\n{text}");
    }
    let pool_max = metric(&text, "patron_db_pool_max").expect("pool max");
    assert_eq!(pool_max, f64::from(app.settings.database.max_connections));
    // Campaign and scoring follow the profile feed: their positions are exported.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = app.metrics().await;
        if text
            .lines()
            .any(|l| l.starts_with("patron_feed_position{") && !l.ends_with(" 0"))
        {
            assert!(text.contains("patron_feed_lag_seconds{"), "{text}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no feed position:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Made-up paths do not create label values.
    let mut health = app.health();
    let _ = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert!(!app.metrics().await.contains("made.up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_sqlite() {
    if let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
    {
        metrics_count_calls_by_method_and_code(app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_postgres() {
    if let Some(app) = TestApp::spawn_with(Backend::Postgres, |s| {
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
    {
        metrics_count_calls_by_method_and_code(app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_resource_exhausted_with_retry_info() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        // The first token is what the services present to each other; the
        // services' own polling is not limited, and takes no client's budget.
        s.auth.tokens = ["peer-only", "noisy", "quiet"]
            .map(SecretString::from)
            .to_vec();
        s.limits.rate_per_client = 0.5;
        s.limits.burst = 3;
    })
    .await
    else {
        return;
    };
    let mut profile = app.profile();
    for i in 0..3 {
        let err = profile
            .get_customer(with_token(get("nobody"), "noisy"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "call {i} is within the burst");
    }
    let limited = profile
        .get_customer(with_token(get("nobody"), "noisy"))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    let retry = limited
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(2),
        "{retry:?}"
    );
    // Another client has its own budget; health is never limited.
    let other = profile
        .get_customer(with_token(get("nobody"), "quiet"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound);
    for _ in 0..10 {
        app.health()
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health is not rate limited");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_max_in_flight_are_shed_with_unavailable() {
    const LIMIT: u32 = 6;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.limits.max_in_flight = LIMIT;
    })
    .await
    else {
        return;
    };
    // Following streams stay open, each holding a slot (as do the
    // services' own feed followers); the limit is reached within LIMIT opens.
    let mut profile = app.profile();
    let mut open = Vec::new();
    let shed = loop {
        match profile
            .stream_changes(profile_pb::StreamChangesRequest {
                after_sequence: 0,
                max_batch_size: 0,
            })
            .await
        {
            Ok(stream) => open.push(stream.into_inner()),
            Err(status) => break status,
        }
        assert!(open.len() <= LIMIT as usize, "never shed");
    };
    assert_eq!(shed.code(), Code::Unavailable, "{shed:?}");
    assert!(shed.get_error_details().retry_info().is_some());
    // Probes still answer, and closing streams frees the slots.
    app.health()
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health under load");
    drop(open);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match profile.get_customer(get("nobody")).await {
            Err(s) if s.code() == Code::NotFound => break,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "slots not released: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn population_calls_beyond_the_limit_wait_their_turn() {
    // Each population-wide call reads the whole read model into memory:
    // with `limits.population_calls = 1` a burst of them runs one at a
    // time, and every one is answered (they wait; none is refused).
    use patron_tests::pb::scoring as spb;
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.limits.population_calls = 1;
        s.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
    else {
        return;
    };
    let ids = patron_tests::seed_buyers(&app, 60, 7).await;
    patron_tests::score_everyone(&app, &ids).await;
    let calls = (0..16).map(|i| {
        let mut scoring = app.scoring();
        async move {
            match i % 4 {
                0 => scoring
                    .get_cohort_retention_report(spb::GetCohortRetentionReportRequest::default())
                    .await
                    .map(drop),
                1 => scoring
                    .get_churn_rate_report(spb::GetChurnRateReportRequest::default())
                    .await
                    .map(drop),
                2 => scoring
                    .get_product_distribution_report(
                        spb::GetProductDistributionReportRequest::default(),
                    )
                    .await
                    .map(drop),
                _ => {
                    let mut progress = scoring
                        .recompute_scores(spb::RecomputeScoresRequest::default())
                        .await?
                        .into_inner();
                    while progress.message().await?.is_some() {}
                    Ok(())
                }
            }
        }
    });
    for (i, result) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        result.unwrap_or_else(|e| panic!("call {i}: {e:?}"));
    }
    let text = app.metrics().await;
    assert_eq!(metric(&text, "patron_population_calls_running"), Some(0.0));
    assert_eq!(metric(&text, "patron_population_calls_waiting"), Some(0.0));
    let waited = metric(&text, "patron_population_calls_waited_total").unwrap();
    assert!(
        waited >= 1.0,
        "sixteen calls at once, one slot: {waited} waited"
    );
}

/// A CA, a server certificate for localhost signed by it, and a client
/// certificate from an unrelated CA, as PEM files in `dir`.
struct Pki {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    rogue_cert: String,
    rogue_key: String,
    ca_pem: String,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();

    let rogue_ca_key = KeyPair::generate().unwrap();
    let mut rogue_ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    rogue_ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let rogue_issuer = rcgen::Issuer::new(rogue_ca_params, rogue_ca_key);
    let rogue_key = KeyPair::generate().unwrap();
    let rogue = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&rogue_key, &rogue_issuer)
        .unwrap();

    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("server.pem", cert.pem()),
        key: write("server.key", key.serialize_pem()),
        rogue_cert: rogue.pem(),
        rogue_key: rogue_key.serialize_pem(),
        ca_pem: ca.pem(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_certificates_from_the_client_ca() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.tls.cert = Some(pki.cert.clone());
        s.tls.key = Some(pki.key.clone());
        s.tls.client_ca = Some(pki.ca.clone());
        s.tls.peer_ca = Some(pki.ca.clone());
    })
    .await
    else {
        return;
    };
    // The harness calls with the deployment's certificate: accepted.
    let created = app
        .profile()
        .create_customer(new_customer("tls-1"))
        .await
        .expect("a certificate from the client CA is accepted")
        .into_inner();

    let url = format!("https://127.0.0.1:{}", app.port);
    let tls = || {
        ClientTlsConfig::new()
            .domain_name("localhost")
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
    };
    let call = |tls: ClientTlsConfig| {
        let url = url.clone();
        async move {
            let channel = Endpoint::from_shared(url)
                .unwrap()
                .connect_timeout(Duration::from_secs(5))
                .tls_config(tls)
                .unwrap()
                .connect()
                .await;
            match channel {
                Err(e) => Err(format!("connect: {e}")),
                Ok(channel) => {
                    profile_pb::customer_profile_service_client::CustomerProfileServiceClient::new(
                        channel,
                    )
                    .get_customer(get("nobody"))
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
                }
            }
        }
    };
    let rogue = call(tls().identity(Identity::from_pem(&pki.rogue_cert, &pki.rogue_key))).await;
    assert!(
        rogue.is_err(),
        "a certificate from another CA must be refused"
    );
    let anonymous = call(tls()).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate must be refused"
    );

    // Plain text to a TLS port fails too.
    let plain = profile_pb::customer_profile_service_client::CustomerProfileServiceClient::new(
        Endpoint::from_shared(format!("http://127.0.0.1:{}", app.port))
            .unwrap()
            .connect_lazy(),
    )
    .get_customer(get("nobody"))
    .await;
    assert!(plain.is_err());

    // The services reach each other over mTLS: campaign's feed follower
    // sees the customer created above.
    campaign_sees(&app, &created.id, None, "over mTLS").await;
}

/// With `database.migrate_on_start` off (the Helm chart's migration Job
/// migrates instead), a server waits NOT_SERVING until the schema is
/// current, then serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_migrate_on_start_a_server_waits_for_the_migration_job() {
    use patron_runtime::Application;
    use patron_tests::{all_modules, fresh_database, test_settings};
    let Some((database, _dir)) = fresh_database(Backend::Sqlite).await else {
        return;
    };
    let mut settings = test_settings(database.clone());
    settings.database.migrate_on_start = false;
    let app = Application::build(settings, &all_modules()).await.unwrap();
    let port = app.port();
    let shutdown = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = |mut health: tonic_health::pb::health_client::HealthClient<_>| async move {
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status)
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        status(health.clone()).await.unwrap(),
        ServingStatus::NotServing as i32,
        "no schema yet: not serving"
    );

    // What `patron migrate` (the Job) does.
    let storage = patron_store::Storage::connect_lazy(&database)
        .await
        .unwrap();
    let schemas: Vec<_> = ServiceKind::ALL.iter().map(|k| k.schema()).collect();
    storage.ready(&schemas, true).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while status(health.clone()).await.unwrap() != ServingStatus::Serving as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never became SERVING after the migration"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// A fresh database of `backend` with scoring's schema as it was just
/// before the migration named `name`; `after` is how many migrations come
/// from it on (`down` that many to undo it). None when the backend is not
/// available.
struct SchemaBefore {
    storage: patron_store::Storage,
    after: u32,
    _dir: Option<tempfile::TempDir>,
}

async fn scoring_schema_before(backend: Backend, name: &str) -> Option<SchemaBefore> {
    use patron_migrations::{MigratorTrait, ScoringMigrator};
    let (database, dir) = patron_tests::fresh_database(backend).await?;
    let storage = patron_store::Storage::connect_lazy(&database)
        .await
        .unwrap();
    let all = ScoringMigrator::migrations();
    let before = all
        .iter()
        .position(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no scoring migration {name}"));
    ScoringMigrator::up(storage.connection(), Some(before as u32))
        .await
        .unwrap();
    Some(SchemaBefore {
        storage,
        after: (all.len() - before) as u32,
        _dir: dir,
    })
}

/// `m20261128_000015_scoring_customer_histories` packs scoring's day rows
/// into one history per customer (days in day order, 24 bytes each,
/// big-endian, extreme values included) and unpacks them on the way down,
/// on each backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purchase_history_migration_packs_the_day_rows_and_back() {
    use patron_migrations::{MigratorTrait, ScoringMigrator};
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    // (customer, day, amount, cost, transactions), as the old table held them.
    let rows: Vec<(String, i32, i64, i64, i32)> = vec![
        ("a".into(), -3, -7, i64::MIN, 3),
        ("b".into(), 18_999, 7, 0, 2),
        ("b".into(), 19_000, 5_000_000_000, 1, 1),
        ("c".into(), 0, i64::MAX, -1, i32::MAX),
    ];
    let packed = |days: &[&(String, i32, i64, i64, i32)]| -> Vec<u8> {
        days.iter()
            .flat_map(|(_, day, amount, cost, n)| {
                [
                    &day.to_be_bytes()[..],
                    &amount.to_be_bytes(),
                    &cost.to_be_bytes(),
                    &n.to_be_bytes(),
                ]
                .concat()
            })
            .collect()
    };
    let want: Vec<(String, Vec<u8>)> = vec![
        ("a".into(), packed(&[&rows[0]])),
        ("b".into(), packed(&[&rows[1], &rows[2]])),
        ("c".into(), packed(&[&rows[3]])),
    ];
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(schema) =
            scoring_schema_before(backend, "m20261128_000015_scoring_customer_histories").await
        else {
            continue;
        };
        let db = schema.storage.connection();
        // Inserted newest day first: the packing orders by day.
        for (id, day, amount, cost, n) in rows.iter().rev() {
            db.execute_raw(Statement::from_sql_and_values(
                db.get_database_backend(),
                match db.get_database_backend() {
                    DbBackend::Postgres => {
                        "INSERT INTO scoring_customer_days VALUES ($1, $2, $3, $4, $5)"
                    }
                    _ => "INSERT INTO scoring_customer_days VALUES (?, ?, ?, ?, ?)",
                },
                [
                    id.clone().into(),
                    (*day).into(),
                    (*amount).into(),
                    (*cost).into(),
                    (*n).into(),
                ],
            ))
            .await
            .unwrap();
        }
        ScoringMigrator::up(db, None).await.unwrap();
        let query = |sql: &str| {
            db.query_all_raw(Statement::from_string(
                db.get_database_backend(),
                sql.to_owned(),
            ))
        };
        let got: Vec<(String, Vec<u8>)> =
            query("SELECT customer_id, days FROM scoring_customer_histories ORDER BY customer_id")
                .await
                .unwrap()
                .into_iter()
                .map(|r| {
                    (
                        r.try_get_by_index(0).unwrap(),
                        r.try_get_by_index(1).unwrap(),
                    )
                })
                .collect();
        assert_eq!(got, want, "{backend:?}: packed");
        assert!(
            query("SELECT 1 FROM scoring_customer_days").await.is_err(),
            "{backend:?}: the day rows' table is dropped"
        );

        // Down through it (and the migrations after it).
        ScoringMigrator::down(db, Some(schema.after)).await.unwrap();
        let got: Vec<(String, i32, i64, i64, i32)> = query(
            "SELECT customer_id, day, amount_nanos, cost_nanos, transactions \
             FROM scoring_customer_days ORDER BY customer_id, day",
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.try_get_by_index(0).unwrap(),
                r.try_get_by_index(1).unwrap(),
                r.try_get_by_index(2).unwrap(),
                r.try_get_by_index(3).unwrap(),
                r.try_get_by_index(4).unwrap(),
            )
        })
        .collect();
        assert_eq!(got, rows, "{backend:?}: unpacked on the way down");
        ScoringMigrator::up(db, None).await.unwrap();
        assert_eq!(
            query("SELECT customer_id FROM scoring_customer_histories")
                .await
                .unwrap()
                .len(),
            3,
            "{backend:?}: and up again"
        );
    }
}

/// `m20261129_000016_scoring_narrow_scores` turns the stored labels into
/// codes and drops `model_version`, on each backend: every label of every
/// dimension reads back under its own name (the store reads the codes
/// through the migration's list), and going down restores the names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_narrow_scores_migration_keeps_every_label_and_back() {
    use patron_migrations::{MigratorTrait, SCORE_LABELS, ScoringMigrator};
    use patron_store::scoring::ScoringStore;
    use sea_orm::{ConnectionTrait, Statement};
    // Row i has label i of each dimension (the first label where a
    // dimension has fewer), and one more row has names no version wrote.
    let rows = SCORE_LABELS.iter().map(|(_, l)| l.len()).max().unwrap();
    let label = |dimension: usize, i: usize| {
        let labels = SCORE_LABELS[dimension].1;
        labels.get(i).copied().unwrap_or(labels[0])
    };
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(schema) =
            scoring_schema_before(backend, "m20261129_000016_scoring_narrow_scores").await
        else {
            continue;
        };
        let (storage, db) = (&schema.storage, schema.storage.connection());
        let bytes = match db.get_database_backend() {
            sea_orm::DbBackend::Postgres => "decode('0a01', 'hex')",
            _ => "unhex('0a01')",
        };
        let insert = |id: String, labels: Vec<String>| {
            let labels = labels
                .iter()
                .map(|l| format!("'{l}'"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "INSERT INTO scoring_scores (customer_id, model_version, computed_at, segment, \
                 value_tier, value_quadrant, churn_risk, lifecycle_stage, score, data_seq, revision) \
                 VALUES ('{id}', 'm1', '2026-11-25 12:00:00+00', {labels}, {bytes}, 7, 3)"
            )
        };
        for i in 0..rows {
            db.execute_unprepared(&insert(
                format!("c-{i:02}"),
                (0..5).map(|d| label(d, i).to_owned()).collect(),
            ))
            .await
            .unwrap();
        }
        db.execute_unprepared(&insert("c-unknown".into(), vec!["bogus".into(); 5]))
            .await
            .unwrap();
        ScoringMigrator::up(db, None).await.unwrap();

        let distribution = ScoringStore::new(storage).distribution().await.unwrap();
        assert_eq!(distribution.customers, rows as i64 + 1, "{backend:?}");
        for (column, labels) in SCORE_LABELS {
            let mut want: Vec<(&str, i64)> = labels
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    // The label's own row; the first label also has the rows
                    // past the list's end and the unknown names (code 0).
                    let extra = if i == 0 { rows - labels.len() + 1 } else { 0 };
                    (*name, (1 + extra) as i64)
                })
                .collect();
            want.sort();
            let mut got: Vec<(&str, i64)> = distribution
                .counts
                .iter()
                .filter(|(c, _, _)| *c == column)
                .map(|(_, name, n)| (*name, *n))
                .collect();
            got.sort();
            assert_eq!(got, want, "{backend:?}: {column}");
        }
        let query = |sql: &str| {
            db.query_all_raw(Statement::from_string(
                db.get_database_backend(),
                sql.to_owned(),
            ))
        };
        assert!(
            query("SELECT model_version FROM scoring_scores")
                .await
                .is_err(),
            "{backend:?}: model_version is dropped"
        );
        let kept = query(
            "SELECT score, data_seq, revision FROM scoring_scores WHERE customer_id = 'c-03'",
        )
        .await
        .unwrap();
        let kept: (Vec<u8>, i64, i64) = (
            kept[0].try_get_by_index(0).unwrap(),
            kept[0].try_get_by_index(1).unwrap(),
            kept[0].try_get_by_index(2).unwrap(),
        );
        assert_eq!(
            kept,
            (vec![0x0a, 0x01], 7, 3),
            "{backend:?}: the rest is kept"
        );

        ScoringMigrator::down(db, Some(1)).await.unwrap();
        let names = query(
            "SELECT customer_id, model_version, segment, value_tier, value_quadrant, churn_risk, \
             lifecycle_stage FROM scoring_scores ORDER BY customer_id",
        )
        .await
        .unwrap();
        assert_eq!(names.len(), rows + 1, "{backend:?}");
        for (i, r) in names.iter().enumerate() {
            let got: Vec<String> = (1..7).map(|c| r.try_get_by_index(c).unwrap()).collect();
            let mut want = vec![String::new()];
            // c-unknown, last, comes back with code 0's names.
            want.extend((0..5).map(|d| label(d, if i < rows { i } else { 0 }).to_owned()));
            assert_eq!(got, want, "{backend:?}: row {i} on the way down");
        }
        ScoringMigrator::up(db, None).await.unwrap();
        assert_eq!(
            ScoringStore::new(storage)
                .distribution()
                .await
                .unwrap()
                .customers,
            rows as i64 + 1,
            "{backend:?}: and up again"
        );
    }
}

/// A request over `server.max_message_bytes` is RESOURCE_EXHAUSTED, as the
/// gRPC status-code spec has it, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_resource_exhausted() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.server.max_message_bytes = 64 * 1024;
    })
    .await
    else {
        return;
    };
    let customers = (0..1000)
        .map(|i| profile_pb::Customer {
            external_id: format!("big-{i:04}"),
            display_name: "x".repeat(100),
            ..Default::default()
        })
        .collect();
    let err = app
        .profile()
        .upsert_customers(profile_pb::UpsertCustomersRequest { customers })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    app.profile()
        .create_customer(new_customer("small-after-big"))
        .await
        .expect("the server keeps serving");
}
