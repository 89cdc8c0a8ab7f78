//! The test harness shared by every end-to-end test.
//!
//! [`TestApp::spawn`] starts a real server on `127.0.0.1:0` against a fresh
//! database (a new SQLite file, or a new PostgreSQL database on the server
//! at `DATABASE_URL`) and returns once grpc.health says SERVING. Use
//! [`backend_tests!`] to run one test body on every backend.
//!
//! PostgreSQL and Redis tests need `DATABASE_URL` (postgres://...) and
//! `REDIS_URL`. Without them they are skipped with a loud message, unless
//! `PATRON_TEST_REQUIRE_BACKENDS=1` (set by `.ci/run`), which turns a missing
//! backend into a failure. Logs: `TEST_LOG=1`.

use std::{sync::LazyLock, time::Duration};

use patron_proto::{
    campaign::campaign_service_client::CampaignServiceClient,
    feedback::feedback_service_client::FeedbackServiceClient,
    profile::customer_profile_service_client::CustomerProfileServiceClient,
    scoring::scoring_service_client::ScoringServiceClient,
};
use patron_runtime::{Application, ServiceKind, ServiceModule, Settings};
use patron_store::DatabaseSettings;
use sea_orm::{ConnectionTrait, Database};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub use patron_proto as pb;

/// The storage backends every service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let settings = patron_runtime::config::LogSettings {
            format: patron_runtime::config::LogFormat::Pretty,
            filter: "debug,h2=info,hyper=info,tower=info,sqlx=warn".into(),
        };
        let _ = tracing::subscriber::set_global_default(patron_runtime::telemetry::subscriber(
            &settings,
            std::io::stdout,
            None,
        ));
    }
});

fn require_backends() -> bool {
    std::env::var("PATRON_TEST_REQUIRE_BACKENDS").is_ok_and(|v| v == "1" || v == "true")
}

/// Reports a missing backend: a loud skip on a laptop, a failure in CI.
pub fn skip(what: &str, why: &str) {
    if require_backends() {
        panic!("{what} is required (PATRON_TEST_REQUIRE_BACKENDS=1) but {why}");
    }
    eprintln!(
        "\n!!! SKIPPED {what}: {why}. Set DATABASE_URL / REDIS_URL or run scripts/test. !!!\n"
    );
}

/// The PostgreSQL server URL the tests create databases on, if any.
pub fn postgres_url() -> Option<String> {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

/// The Redis URL, if any.
pub fn redis_url() -> Option<String> {
    std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty())
}

/// Replaces the database name of a PostgreSQL URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_and_path = &base[scheme_end..];
    let host = host_and_path.split('/').next().unwrap_or(host_and_path);
    format!("{}{host}/{db}{query}", &base[..scheme_end])
}

/// A fresh, empty database for one test. `None` (after a loud skip) when
/// the backend is not available.
pub async fn fresh_database(
    backend: Backend,
) -> Option<(DatabaseSettings, Option<tempfile::TempDir>)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("patron.db");
            let settings = DatabaseSettings::with_url(format!("sqlite://{}", path.display()));
            Some((settings, Some(dir)))
        }
        Backend::Postgres => {
            let Some(server) = postgres_url() else {
                skip("PostgreSQL test", "DATABASE_URL is not a postgres:// URL");
                return None;
            };
            let name = format!("patron_test_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(server.as_str())
                .await
                .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL: {e}"));
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            let _ = admin.close().await;
            Some((
                DatabaseSettings::with_url(with_database(&server, &name)),
                None,
            ))
        }
    }
}

/// Settings for a test server: port 0, a short grace period, fresh database.
pub fn test_settings(database: DatabaseSettings) -> Settings {
    let mut settings = Settings::default();
    settings.server.addr = "127.0.0.1:0".parse().expect("addr");
    settings.server.shutdown_grace_secs = 5;
    settings.database = database;
    settings.database.startup_timeout_secs = 30;
    // Campaign's followers and segment watcher poll quickly in tests.
    settings.campaign.watch_interval_ms = 100;
    settings.campaign.score_sync_interval_ms = 100;
    settings
}

/// Every service, as `patron serve` runs them.
pub fn all_modules() -> Vec<ServiceModule> {
    vec![
        patron_profile::module(),
        patron_scoring::module(),
        patron_feedback::module(),
        patron_campaign::module(),
    ]
}

/// A running server.
pub struct TestApp {
    pub backend: Backend,
    pub port: u16,
    /// Where `/metrics` is served, when `metrics_addr` was set.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub channel: Channel,
    pub settings: Settings,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), patron_runtime::server::StartupError>>>,
    _tempdir: Option<tempfile::TempDir>,
}

impl TestApp {
    /// All services on a fresh database of `backend`; `None` if skipped.
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Like [`TestApp::spawn`], letting the test adjust the settings first.
    pub async fn spawn_with(
        backend: Backend,
        customize: impl FnOnce(&mut Settings),
    ) -> Option<Self> {
        LazyLock::force(&TRACING);
        let (database, tempdir) = fresh_database(backend).await?;
        let mut settings = test_settings(database);
        customize(&mut settings);
        Some(Self::start(backend, settings, tempdir).await)
    }

    /// Another server on the same database, as a second replica of every
    /// service would run (it must not outlive `self`, which owns the files).
    pub async fn spawn_replica(&self) -> TestApp {
        Self::start(self.backend, self.settings.clone(), None).await
    }

    /// A server with exactly these settings (e.g. a database the test runs itself).
    pub async fn start_with_settings(backend: Backend, settings: Settings) -> TestApp {
        LazyLock::force(&TRACING);
        Self::start(backend, settings, None).await
    }

    /// Stops this server and starts a new one on the same database.
    pub async fn restart(mut self) -> Self {
        let tempdir = self._tempdir.take();
        let (backend, settings) = (self.backend, self.settings.clone());
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("server task").expect("clean exit");
        }
        Self::start(backend, settings, tempdir).await
    }

    async fn start(
        backend: Backend,
        settings: Settings,
        tempdir: Option<tempfile::TempDir>,
    ) -> Self {
        let app = Application::build(settings.clone(), &all_modules())
            .await
            .expect("build application");
        let port = app.port();
        let metrics_addr = app.metrics_addr();
        let shutdown = app.shutdown_token();
        let handle = tokio::spawn(app.run_until_stopped());
        let channel = match (&settings.tls.cert, &settings.tls.key, &settings.tls.peer_ca) {
            // Under TLS the harness calls as a peer would: the server's own certificate.
            (Some(cert), Some(key), Some(ca)) => {
                let read = |p: &std::path::Path| std::fs::read(p).expect("read TLS file");
                let tls = tonic::transport::ClientTlsConfig::new()
                    .domain_name("localhost")
                    .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)))
                    .identity(tonic::transport::Identity::from_pem(read(cert), read(key)));
                tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
                    .expect("endpoint")
                    .tls_config(tls)
                    .expect("client TLS")
                    .connect_lazy()
            }
            _ => tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("endpoint")
                .connect_lazy(),
        };
        let app = Self {
            backend,
            port,
            metrics_addr,
            channel,
            settings,
            shutdown,
            handle: Some(handle),
            _tempdir: tempdir,
        };
        app.wait_until_serving(&ServiceKind::ALL).await;
        app
    }

    /// Polls grpc.health until every given service is SERVING (30 s at most).
    pub async fn wait_until_serving(&self, kinds: &[ServiceKind]) {
        let mut health = HealthClient::new(self.channel.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for kind in kinds {
            loop {
                let status = health
                    .check(HealthCheckRequest {
                        service: kind.grpc_name().into(),
                    })
                    .await
                    .map(|r| r.into_inner().status);
                if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} not SERVING after 30 s: {status:?}",
                    kind.grpc_name()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// `GET /metrics` (the server must have `metrics_addr` set).
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_addr.expect("metrics_addr is set");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: patron\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    pub fn profile(&self) -> CustomerProfileServiceClient<Channel> {
        CustomerProfileServiceClient::new(self.channel.clone())
    }

    pub fn scoring(&self) -> ScoringServiceClient<Channel> {
        ScoringServiceClient::new(self.channel.clone())
    }

    pub fn feedback(&self) -> FeedbackServiceClient<Channel> {
        FeedbackServiceClient::new(self.channel.clone())
    }

    pub fn campaign(&self) -> CampaignServiceClient<Channel> {
        CampaignServiceClient::new(self.channel.clone())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// Shuts the server down as SIGTERM would and waits for it to exit.
    pub async fn stop(mut self) -> Result<(), patron_runtime::server::StartupError> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(handle) => handle.await.expect("server task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs each `async fn name(app: TestApp)` body once per backend, as
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($app:ident: TestApp) $body:block)*) => {
        $(async fn $name($app: $crate::TestApp) $body)*

        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = $crate::TestApp::spawn($crate::Backend::Sqlite).await {
                        super::$name(app).await;
                    }
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = $crate::TestApp::spawn($crate::Backend::Postgres).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
    };
}

/// Creates `count` customers (external ids `buyer-<n>`) whose purchases
/// follow the BG/NBD story: each buys at its own steady rate until, after
/// some purchase, never again; spend levels differ. Enough of them (200)
/// let scoring fit its models. Returns their ids.
pub async fn seed_buyers(app: &TestApp, count: usize, seed: u64) -> Vec<String> {
    seed_buyers_paying(app, count, seed, None).await
}

/// [`seed_buyers`], every purchase at `fixed_cents` when given (a fixed
/// price, as a subscription has) instead of spend levels that vary.
pub async fn seed_buyers_paying(
    app: &TestApp,
    count: usize,
    seed: u64,
    fixed_cents: Option<i64>,
) -> Vec<String> {
    use rand::Rng;
    seed_histories(app, count, seed, |rng| {
        let rate: f64 = rng.random_range(0.005..0.08);
        let drop: f64 = rng.random_range(0.05..0.5);
        // Spend levels spread like a gamma mixture, as Gamma-Gamma assumes.
        let level: f64 = rng.random_range(5.0..150.0f64).powf(1.3);
        let mut day = -700 + rng.random_range(0..400i64);
        let mut purchases = Vec::new();
        while day < 0 {
            let varied = (level * rng.random_range(60.0..140.0)) as i64;
            purchases.push((day, fixed_cents.unwrap_or(varied)));
            if rng.random_bool(drop) {
                break;
            }
            day += (-rng.random::<f64>().max(1e-9).ln() / rate).ceil() as i64;
        }
        purchases
    })
    .await
}

/// Creates `count` customers whose purchases are drawn the way test data
/// usually is, with no story behind it: 1 to 5 purchases each, on days
/// uniform over the last year, amounts uniform between 5 and 200 EUR. No
/// customer differs from another in rate, loyalty or spend, which leaves the
/// purchase models' shape parameters at their limits. Returns their ids.
pub async fn seed_uniform_buyers(app: &TestApp, count: usize, seed: u64) -> Vec<String> {
    use rand::Rng;
    seed_histories(app, count, seed, |rng| {
        (0..rng.random_range(1..=5))
            .map(|_| {
                (
                    rng.random_range(-365..0i64),
                    rng.random_range(500..20_000i64),
                )
            })
            .collect()
    })
    .await
}

/// Creates `count` customers (external ids `buyer-<n>`, region West), each
/// with the purchases `history` draws: (day relative to today, amount in
/// EUR cents), recorded through the profile service. Returns their ids.
pub async fn seed_histories(
    app: &TestApp,
    count: usize,
    seed: u64,
    mut history: impl FnMut(&mut rand_chacha::ChaCha8Rng) -> Vec<(i64, i64)>,
) -> Vec<String> {
    use pb::{common::Money, profile as ppb};
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let now = chrono::Utc::now().timestamp();
    let mut ids = Vec::new();
    for c in 0..count {
        let customer = app
            .profile()
            .create_customer(ppb::CreateCustomerRequest {
                customer: Some(ppb::Customer {
                    external_id: format!("buyer-{c}"),
                    region: "West".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .expect("create buyer")
            .into_inner();
        let transactions = history(&mut rng)
            .into_iter()
            .enumerate()
            .map(|(i, (day, cents))| ppb::Transaction {
                id: format!("buyer-{c}-{i}"),
                customer_id: customer.id.clone(),
                occurred_at: Some(prost_types::Timestamp {
                    seconds: now + 86_400 * day,
                    nanos: 0,
                }),
                amount: Some(Money {
                    currency_code: "EUR".into(),
                    units: cents / 100,
                    nanos: (cents % 100) as i32 * 10_000_000,
                }),
                quantity: 1,
                category: "toys".into(),
                ..Default::default()
            })
            .collect();
        app.profile()
            .record_transactions(ppb::RecordTransactionsRequest { transactions })
            .await
            .expect("record purchases");
        ids.push(customer.id);
    }
    ids
}

/// Fits the purchase models and recomputes scores until one recompute has
/// scored each of `ids`, all buyers, with their purchases (scoring's read
/// model follows the feed, so the first attempts may see only part of the
/// data: a customer whose purchases have not arrived yet is scored as a
/// prospect, and online scoring may score the rest against that part).
/// Panics after 60 s.
pub async fn score_everyone(app: &TestApp, ids: &[String]) {
    scored_within_a_minute(app, ids, true).await;
}

/// Recomputes scores without calling FitModel (RecomputeScores fits a model
/// itself when there is none, and scores without one when the data
/// identifies none) until one recompute has scored each of `ids`, all
/// buyers, with their purchases. Panics after 60 s.
pub async fn recompute_until_scored(app: &TestApp, ids: &[String]) {
    scored_within_a_minute(app, ids, false).await;
}

async fn scored_within_a_minute(app: &TestApp, ids: &[String], fit_first: bool) {
    use pb::scoring as spb;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let fitted = !fit_first
            || app
                .scoring()
                .fit_model(spb::FitModelRequest::default())
                .await
                .is_ok();
        if fitted {
            let mut progress = app
                .scoring()
                .recompute_scores(spb::RecomputeScoresRequest::default())
                .await
                .expect("recompute")
                .into_inner();
            while progress
                .message()
                .await
                .expect("recompute progress")
                .is_some()
            {}
            // A score from a recompute has ranks_stale unset; one from
            // online scoring, a prospect's, or none means the recompute
            // missed someone's purchases.
            let mut all_scored = true;
            for chunk in ids.chunks(1_000) {
                let answer = app
                    .scoring()
                    .batch_get_scores(spb::BatchGetScoresRequest {
                        customer_ids: chunk.to_vec(),
                    })
                    .await
                    .expect("batch get scores")
                    .into_inner();
                all_scored &= answer.missing_ids.is_empty()
                    && answer.scores.iter().all(|s| {
                        s.lifecycle_stage != spb::LifecycleStage::Prospect as i32
                            && s.rfm.as_ref().is_some_and(|r| !r.ranks_stale)
                    });
            }
            if all_scored {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the customers were not all scored within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A connection to the Redis at `url` and every key under `prefix` there.
pub async fn redis_keys(
    url: &str,
    prefix: &str,
) -> (redis::aio::MultiplexedConnection, Vec<String>) {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("redis KEYS");
    (conn, keys)
}

/// The value of the sample `series` (name and labels exactly as rendered)
/// in a metrics scrape.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The `BadRequest` field paths of a failed call.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://root@127.0.0.1:5432/postgres", "t1"),
            "postgres://root@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
    }
}
