//! The gRPC server every binary runs, whatever services it hosts.
//!
//! Start-up: bind the listener (port 0 in tests), build the chosen services
//! on a lazily connected database, and start serving at once with every
//! service NOT_SERVING in grpc.health.v1; then connect, migrate, and flip to
//! SERVING. On SIGTERM / Ctrl-C (or [`Application::shutdown_token`]) health
//! goes back to NOT_SERVING, new connections stop, in-flight calls drain for
//! up to `server.shutdown_grace_secs`, and the process exits cleanly.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use patron_cache::Cache;
use patron_store::{Storage, StoreError};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    service::{Routes, RoutesBuilder},
    transport::{Certificate, Server, ServerTlsConfig},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    config::{ConfigError, ServiceKind, Settings, TlsSettings},
    cork::Corked,
    guard::GuardLayer,
    metrics::Metrics,
    peers::{Peers, identity, read},
};

/// What a service's constructor gets.
#[derive(Clone)]
pub struct ServiceContext {
    pub settings: Arc<Settings>,
    pub storage: Storage,
    pub cache: Cache,
    pub peers: Peers,
    pub metrics: Metrics,
    /// Cancelled when the process shuts down; long-lived streams and
    /// background tasks end on it.
    pub shutdown: CancellationToken,
    /// Becomes true once storage is migrated, just before `on_ready` runs.
    ready: tokio::sync::watch::Receiver<bool>,
}

impl ServiceContext {
    /// Waits until storage is ready (for work started at registration).
    pub async fn storage_ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    pub fn max_message_bytes(&self) -> usize {
        self.settings.server.max_message_bytes
    }
}

/// A generated tonic service with the server's codec settings, the same for
/// every service (`with_codec_settings!(ctx, FooServiceServer::new(api))`):
///
/// - `server.max_message_bytes` as the limit on requests and answers; for a
///   compressed request it bounds the decompressed size, checked while
///   inflating, so a small "zip bomb" costs at most the limit and gets
///   RESOURCE_EXHAUSTED.
/// - Requests compressed with gzip or deflate are accepted. They are the
///   encodings every gRPC implementation offers, and a client configured
///   to compress (one option in grpc-go, grpc-java, grpc-python) would
///   otherwise get UNIMPLEMENTED from every call.
/// - Answers go uncompressed (identity, which every client accepts): most
///   answers are small and latency-bound, and compressing them would cost
///   the CPU the hot paths are measured by.
///
/// A macro because the generated servers share no trait for these methods.
#[macro_export]
macro_rules! with_codec_settings {
    ($ctx:expr, $service:expr) => {{
        let limit = $ctx.max_message_bytes();
        $service
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
            .accept_compressed($crate::__tonic::codec::CompressionEncoding::Gzip)
            .accept_compressed($crate::__tonic::codec::CompressionEncoding::Deflate)
    }};
}

/// How a service plugs into a server.
#[derive(Clone, Copy)]
pub struct ServiceModule {
    pub kind: ServiceKind,
    /// Services this one calls; each must be served here or configured under `peers.*`.
    pub depends_on: &'static [ServiceKind],
    /// Adds the service's gRPC server to the routes.
    pub register: fn(&ServiceContext, &mut RoutesBuilder),
    /// Starts background work (e.g. a change-feed consumer) once storage is
    /// ready; it must stop when `ServiceContext::shutdown` is cancelled.
    pub on_ready: Option<fn(&ServiceContext)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    routes: Routes,
    guard: GuardLayer,
    tls: Option<ServerTlsConfig>,
    metrics_addr: Option<SocketAddr>,
    health: HealthReporter,
    ctx: ServiceContext,
    kinds: Vec<ServiceKind>,
    on_ready: Vec<fn(&ServiceContext)>,
    ready_tx: tokio::sync::watch::Sender<bool>,
}

impl Application {
    /// Binds and wires everything; connects to nothing yet.
    pub async fn build(
        settings: Settings,
        modules: &[ServiceModule],
    ) -> Result<Self, StartupError> {
        settings.validate()?;
        let kinds: Vec<ServiceKind> = modules.iter().map(|m| m.kind).collect();
        for m in modules {
            for dep in m.depends_on {
                if !kinds.contains(dep) && settings.peers.get(*dep).is_none() {
                    return Err(ConfigError::new(format!(
                        "peers.{0}: the {1} service calls the {0} service, which is not served by this process; set peers.{0} (PATRON_PEERS__{2})",
                        dep.as_str(),
                        m.kind.as_str(),
                        dep.as_str().to_uppercase()
                    ))
                    .into());
                }
            }
        }

        let storage = Storage::connect_lazy(&settings.database).await?;
        let addr = settings.server.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;
        let peers = Peers::new(&settings, local_addr, &kinds)?;
        let cache = Cache::from_settings(&settings.redis, &settings.cache);
        let metrics = Metrics::new(cache.stats().clone(), storage.clone());
        let guard = GuardLayer::new(
            &settings.auth,
            &settings.limits,
            Duration::from_millis(settings.server.request_timeout_ms),
            metrics.clone(),
        )?;
        let tls = server_tls(&settings.tls)?;
        let shutdown = CancellationToken::new();
        let metrics_addr = match settings.metrics_addr {
            Some(addr) => Some(
                metrics
                    .serve(addr, shutdown.clone())
                    .await
                    .map_err(|source| StartupError::Metrics { addr, source })?,
            ),
            None => None,
        };

        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let ctx = ServiceContext {
            settings: Arc::new(settings),
            storage,
            cache,
            peers,
            metrics,
            shutdown,
            ready,
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for kind in &kinds {
            health
                .set_service_status(kind.grpc_name(), ServingStatus::NotServing)
                .await;
        }

        let mut reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(patron_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for kind in &kinds {
            reflection = reflection.with_service_name(kind.grpc_name());
        }
        let reflection = reflection
            .build_v1()
            .map_err(|e| StartupError::Reflection(e.to_string()))?;

        let mut routes = RoutesBuilder::default();
        routes
            .add_service(with_codec_settings!(ctx, health_service))
            .add_service(with_codec_settings!(ctx, reflection));
        for m in modules {
            (m.register)(&ctx, &mut routes);
        }

        Ok(Self {
            listener,
            local_addr,
            routes: routes.routes(),
            guard,
            tls,
            metrics_addr,
            health,
            ctx,
            kinds,
            on_ready: modules.iter().filter_map(|m| m.on_ready).collect(),
            ready_tx,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served, if `metrics_addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Cancel it to shut the server down as on SIGTERM.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.ctx.shutdown.clone()
    }

    pub fn context(&self) -> &ServiceContext {
        &self.ctx
    }

    /// Serves until a shutdown signal, then drains within the grace period.
    /// Fails if storage does not become ready within `database.startup_timeout_secs`.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let Self {
            listener,
            local_addr,
            routes,
            guard,
            tls,
            metrics_addr,
            health,
            ctx,
            kinds,
            on_ready,
            ready_tx,
        } = self;
        let server_settings = &ctx.settings.server;
        let shutdown = ctx.shutdown.clone();
        let grace = Duration::from_secs(server_settings.shutdown_grace_secs);

        let signal = {
            let shutdown = shutdown.clone();
            let health = health.clone();
            let kinds = kinds.clone();
            async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = os_signal() => {}
                }
                tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
                shutdown.cancel();
                set_status(&health, &kinds, ServingStatus::NotServing).await;
            }
        };

        // Deadlines (the caller's `grpc-timeout`, else server.request_timeout_ms)
        // are enforced by the guard, which answers DEADLINE_EXCEEDED.
        let mut builder = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(
                server_settings.keepalive_interval_secs.max(1),
            )))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_concurrent_streams(server_settings.max_concurrent_streams)
            .tcp_nodelay(true);
        if server_settings.max_connection_age_secs > 0 {
            builder = builder
                .max_connection_age(Duration::from_secs(server_settings.max_connection_age_secs));
        }
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        let serve = builder
            .layer(guard)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(listener), signal);
        tokio::pin!(serve);

        tracing::info!(
            addr = %local_addr,
            metrics = ?metrics_addr,
            tls = ctx.settings.tls.enabled(),
            mtls = ctx.settings.tls.client_ca.is_some(),
            auth = ctx.settings.auth.enabled(),
            services = ?kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            database = ctx.storage.url_for_logs(),
            cache = ctx.cache.backend_name(),
            "serving; waiting for storage"
        );

        let ready = wait_for_storage(&ctx, &kinds);
        tokio::select! {
            result = &mut serve => return result.map_err(Into::into),
            result = ready => match result {
                Ok(()) => {
                    let _ = ready_tx.send(true);
                    for start in &on_ready {
                        start(&ctx);
                    }
                    set_status(&health, &kinds, ServingStatus::Serving).await;
                    tracing::info!(addr = %local_addr, "ready");
                }
                Err(e) => {
                    shutdown.cancel();
                    let _ = tokio::time::timeout(grace, &mut serve).await;
                    return Err(e);
                }
            },
            () = shutdown.cancelled() => {}
        }

        // Serve until the shutdown signal; then allow the grace period.
        tokio::select! {
            result = &mut serve => return result.map_err(Into::into),
            () = shutdown.cancelled() => {}
        }
        match tokio::time::timeout(grace, &mut serve).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                grace_secs = grace.as_secs(),
                "grace period over; closing remaining calls"
            ),
        }
        ctx.storage.clone().close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Accepted connections with Nagle's algorithm off. tonic's own `tcp_nodelay`
/// only applies to listeners it binds itself; without this, a response's
/// HEADERS, DATA and trailers frames wait on the client's delayed ACK
/// (about 40 ms per call on Linux).
/// Each is [`Corked`], so responses that finish together leave together.
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<Corked<tokio::net::TcpStream>>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.map(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            Corked::new(stream)
        })
    })
}

/// TLS on the gRPC port; client certificates required when `tls.client_ca` is set.
fn server_tls(tls: &TlsSettings) -> Result<Option<ServerTlsConfig>, ConfigError> {
    let Some(identity) = identity(tls)? else {
        return Ok(None);
    };
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "tls.client_ca")?));
    }
    Ok(Some(config))
}

/// Connects and migrates, retrying connection failures until the start-up
/// timeout; configuration and migration errors fail at once.
async fn wait_for_storage(ctx: &ServiceContext, kinds: &[ServiceKind]) -> Result<(), StartupError> {
    let schemas: Vec<_> = kinds.iter().map(|k| k.schema()).collect();
    let db = &ctx.settings.database;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(db.startup_timeout_secs);
    let mut delay = Duration::from_millis(200);
    loop {
        match ctx.storage.ready(&schemas, db.migrate_on_start).await {
            Ok(()) => return Ok(()),
            Err(e @ (StoreError::Connect { .. } | StoreError::SchemaBehind { .. }))
                if tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "storage not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(3));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn set_status(health: &HealthReporter, kinds: &[ServiceKind], status: ServingStatus) {
    for kind in kinds {
        health.set_service_status(kind.grpc_name(), status).await;
    }
    health.set_service_status("", status).await;
}

/// Resolves on Ctrl-C or SIGTERM.
async fn os_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Entry point of the per-service binaries (`patron-profile`, ...):
/// `[--config FILE] [--addr HOST:PORT]`, configuration from the environment.
pub async fn run_service_binary(modules: &[ServiceModule]) -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config_file = None;
    let mut addr = None;
    let mut metrics_addr = None;
    let mut probe = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--probe" => probe = true,
            "--config" => config_file = args.next().map(std::path::PathBuf::from),
            "--addr" => addr = args.next(),
            "--metrics-addr" => metrics_addr = args.next(),
            "-h" | "--help" => {
                println!(
                    "usage: {} [--config FILE] [--addr HOST:PORT] [--metrics-addr HOST:PORT] [--probe]\n  --probe  check grpc.health of the server this configuration describes and exit 0 when SERVING (container health checks)\nconfiguration: docs/operations.md (PATRON_* variables, DATABASE_URL, REDIS_URL)",
                    std::env::args().next().unwrap_or_default()
                );
                return std::process::ExitCode::SUCCESS;
            }
            other => {
                eprintln!("error: unexpected argument {other:?} (try --help)");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let mut settings = match Settings::load(config_file.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let parse = |flag: &str, value: String| {
        value.parse::<SocketAddr>().map_err(|e| {
            eprintln!("error: {flag} {value:?}: {e}");
            std::process::ExitCode::from(2)
        })
    };
    if let Some(addr) = addr {
        match parse("--addr", addr) {
            Ok(a) => settings.server.addr = a,
            Err(code) => return code,
        }
    }
    if let Some(addr) = metrics_addr {
        match parse("--metrics-addr", addr) {
            Ok(a) => settings.metrics_addr = Some(a),
            Err(code) => return code,
        }
    }
    settings.services = modules.iter().map(|m| m.kind).collect();
    if probe {
        return probe_health(&settings).await;
    }
    let telemetry =
        match crate::telemetry::init(&settings.log, &settings.tracing, &settings.service_name()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::from(2);
            }
        };
    let result = serve(settings, modules).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--probe`: asks the server at `server.addr` (over TLS, with the
/// configured certificates, when `tls.*` is set) whether each of its
/// services is SERVING. For container health checks in images without a
/// shell; Kubernetes uses its native gRPC probe instead.
async fn probe_health(settings: &Settings) -> std::process::ExitCode {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let kinds = settings.effective_services();
    let peers = match Peers::new(settings, settings.server.addr, &kinds) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    for kind in kinds {
        let Some(channel) = peers.channel(kind) else {
            continue;
        };
        let mut client = HealthClient::new(channel);
        let check = client.check(HealthCheckRequest {
            service: kind.grpc_name().into(),
        });
        match tokio::time::timeout(Duration::from_secs(3), check).await {
            Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => {}
            Ok(Ok(r)) => {
                eprintln!("{}: {:?}", kind.grpc_name(), r.get_ref().status());
                return std::process::ExitCode::FAILURE;
            }
            Ok(Err(status)) => {
                eprintln!("{}: {}", kind.grpc_name(), status.message());
                return std::process::ExitCode::FAILURE;
            }
            Err(_) => {
                eprintln!("{}: no answer within 3 s", kind.grpc_name());
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    println!("SERVING");
    std::process::ExitCode::SUCCESS
}

/// Builds and runs an application until it stops.
pub async fn serve(settings: Settings, modules: &[ServiceModule]) -> Result<(), StartupError> {
    Application::build(settings, modules)
        .await?
        .run_until_stopped()
        .await
}
