//! Prometheus metrics, served as text at `/metrics` on `metrics_addr`.
//!
//! The gRPC server metrics carry the names and labels of go-grpc-prometheus
//! (`grpc_server_started_total`, `grpc_server_handled_total{grpc_code}`,
//! `grpc_server_handling_seconds`), so existing dashboards and alerts work.
//! Beside them: cache hits, misses and fallbacks, each feed follower's
//! position and lag, and database pool usage, read at scrape time.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use patron_cache::CacheStats;
use patron_store::Storage;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Labels of one RPC, as go-grpc-prometheus has them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub grpc_type: &'static str,
    pub grpc_service: String,
    pub grpc_method: String,
}

/// One RPC's series in the gRPC server metrics. Each is looked up in its
/// family once, on first use (so, as before, only series that happened are
/// exposed), then kept: a call records with a few atomic operations instead
/// of hashing its labels into three families (and cloning them), which
/// was 5% of the server's instructions per cached `GetScore` (callgrind,
/// BENCHMARKS.md, session 11).
pub struct MethodMetrics {
    metrics: Metrics,
    labels: MethodLabels,
    started: OnceLock<Counter>,
    handling: OnceLock<Histogram>,
    /// By `tonic::Code` (0 to 16).
    handled: [OnceLock<Counter>; 17],
}

impl MethodMetrics {
    pub fn labels(&self) -> &MethodLabels {
        &self.labels
    }

    pub fn started(&self) {
        self.started
            .get_or_init(|| {
                self.metrics
                    .inner
                    .started
                    .get_or_create(&self.labels)
                    .clone()
            })
            .inc();
    }

    pub fn handled(&self, code: tonic::Code, elapsed: Duration) {
        let inner = &self.metrics.inner;
        // `Code` is 0 to 16; anything else (impossible) counts as UNKNOWN.
        let slot = self
            .handled
            .get(code as usize)
            .unwrap_or(&self.handled[tonic::Code::Unknown as usize]);
        slot.get_or_init(|| {
            inner
                .handled
                .get_or_create(&HandledLabels {
                    grpc_type: self.labels.grpc_type,
                    grpc_service: self.labels.grpc_service.clone(),
                    grpc_method: self.labels.grpc_method.clone(),
                    grpc_code: code_name(code),
                })
                .clone()
        })
        .inc();
        self.handling
            .get_or_init(|| inner.handling.get_or_create(&self.labels).clone())
            .observe(elapsed.as_secs_f64());
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: &'static str,
}

/// The metrics of one process. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Family<MethodLabels, Histogram>,
    feed_position: Family<ConsumerLabels, Gauge>,
    feed_lag: Family<ConsumerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    rejected: Family<RejectedLabels, Counter>,
    population_running: Gauge,
    population_waiting: Gauge,
    population_waited: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    reason: &'static str,
}

/// Why the server turned a call away before it reached a handler.
#[derive(Clone, Copy, Debug)]
pub enum Rejection {
    Unauthenticated,
    RateLimited,
    Overloaded,
}

impl Metrics {
    /// A registry with every metric of a Patron process; `cache` and
    /// `storage` are read at each scrape.
    pub fn new(cache: Arc<CacheStats>, storage: Storage) -> Self {
        let mut registry = Registry::default();
        let started = Family::<MethodLabels, Counter>::default();
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            started.clone(),
        );
        let handled = Family::<HandledLabels, Counter>::default();
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status",
            handled.clone(),
        );
        let handling = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "grpc_server_handling_seconds",
            "Time from the request to the last response message (the end of the stream)",
            handling.clone(),
        );
        let rejected = Family::<RejectedLabels, Counter>::default();
        registry.register(
            "patron_grpc_rejected",
            "Calls turned away before a handler ran (unauthenticated, rate_limited, overloaded)",
            rejected.clone(),
        );
        let feed_position = Family::<ConsumerLabels, Gauge>::default();
        registry.register(
            "patron_feed_position",
            "Last change-feed sequence or revision a follower applied",
            feed_position.clone(),
        );
        let feed_lag =
            Family::<ConsumerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "patron_feed_lag_seconds",
            "Age of the newest change a follower applied, when it applied it",
            feed_lag.clone(),
        );
        let population_running = Gauge::default();
        registry.register(
            "patron_population_calls_running",
            "Population-wide calls (recompute, model fit, cohort, churn and product reports) running",
            population_running.clone(),
        );
        let population_waiting = Gauge::default();
        registry.register(
            "patron_population_calls_waiting",
            "Population-wide calls waiting for a slot (limits.population_calls)",
            population_waiting.clone(),
        );
        let population_waited = Counter::default();
        registry.register(
            "patron_population_calls_waited",
            "Population-wide calls that found every slot taken and waited",
            population_waited.clone(),
        );
        registry.register_collector(Box::new(ScrapeTime { cache, storage }));
        Self {
            inner: Arc::new(Inner {
                registry,
                started,
                handled,
                handling,
                feed_position,
                feed_lag,
                rejected,
                population_running,
                population_waiting,
                population_waited,
            }),
        }
    }

    /// The metrics of one RPC, recorded into this registry.
    pub fn method(&self, labels: MethodLabels) -> MethodMetrics {
        MethodMetrics {
            metrics: self.clone(),
            labels,
            started: OnceLock::new(),
            handling: OnceLock::new(),
            handled: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    pub fn rejected(&self, why: Rejection) {
        let reason = match why {
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::RateLimited => "rate_limited",
            Rejection::Overloaded => "overloaded",
        };
        self.inner
            .rejected
            .get_or_create(&RejectedLabels { reason })
            .inc();
    }

    /// Population-wide calls started (+1) or ended (-1) running, and
    /// started (+1) or ended (-1) waiting (see `population.rs`).
    pub fn population_call(&self, running: i64, waiting: i64) {
        self.inner.population_running.inc_by(running);
        self.inner.population_waiting.inc_by(waiting);
    }

    /// A population-wide call found every slot taken.
    pub fn population_waited(&self) {
        self.inner.population_waited.inc();
    }

    /// Records that follower `consumer` applied up to `position`, whose
    /// newest change was committed `lag` ago.
    pub fn feed_applied(&self, consumer: &'static str, position: i64, lag: Option<Duration>) {
        let labels = ConsumerLabels { consumer };
        self.inner
            .feed_position
            .get_or_create(&labels)
            .set(position);
        if let Some(lag) = lag {
            self.inner
                .feed_lag
                .get_or_create(&labels)
                .set(lag.as_secs_f64());
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }

    /// Serves `GET /metrics` on `addr` until `shutdown`; returns the bound
    /// address (port 0 picks a free one).
    pub async fn serve(
        &self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let metrics = self.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics listener accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let metrics = metrics.clone();
                        async move { Ok::<_, std::convert::Infallible>(metrics.respond(&req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(local)
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
            ("GET", "/metrics") => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.render(),
            ),
            (_, "/metrics") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "use GET\n".into(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "metrics are at /metrics\n".into(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        response
    }
}

/// Values owned elsewhere, read at each scrape.
struct ScrapeTime {
    cache: Arc<CacheStats>,
    storage: Storage,
}

impl std::fmt::Debug for ScrapeTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeTime")
    }
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (hits, misses, errors) = self.cache.snapshot();
        for (name, help, value) in [
            (
                "patron_cache_hits",
                "Score cache lookups answered by the cache",
                hits,
            ),
            (
                "patron_cache_near_hits",
                "Of the cache hits, those answered by the in-process tier in front of Redis",
                self.cache
                    .near_hits
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "patron_cache_misses",
                "Score cache lookups that went to the store",
                misses,
            ),
            (
                "patron_cache_fallbacks",
                "Cache operations that failed or timed out and fell back to the store",
                errors,
            ),
            (
                "patron_cache_store_loads",
                "Store reads after cache misses (concurrent misses of a key share one; a batch's misses are one)",
                self.cache.loads.load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "patron_cache_redis_reads",
                "Read round trips to Redis (concurrent lookups share them)",
                self.cache
                    .redis_reads
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let pool = self.storage.pool_usage();
        for (name, help, value) in [
            (
                "patron_db_pool_connections",
                "Database connections open in the pool",
                pool.open,
            ),
            (
                "patron_db_pool_idle",
                "Open database connections not in use",
                pool.idle,
            ),
            (
                "patron_db_pool_max",
                "Most connections the pool will open (database.max_connections)",
                pool.max,
            ),
        ] {
            let gauge = ConstGauge::new(i64::from(value));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// The status name as grpc-go spells it (`OK`, `NotFound`, ...), the
/// `grpc_code` label value dashboards expect.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A registry over a database that is never connected.
    pub(crate) async fn metrics() -> Metrics {
        let storage = Storage::connect_lazy(&Default::default())
            .await
            .expect("a lazy pool does not connect");
        Metrics::new(Arc::default(), storage)
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[tokio::test]
    async fn a_method_records_into_its_series_and_only_those_that_happened() {
        let metrics = metrics().await;
        let get = metrics.method(MethodLabels {
            grpc_type: "unary",
            grpc_service: "s.v1.S".into(),
            grpc_method: "Get".into(),
        });
        let put = metrics.method(MethodLabels {
            grpc_type: "unary",
            grpc_service: "s.v1.S".into(),
            grpc_method: "Put".into(),
        });
        for code in [tonic::Code::Ok, tonic::Code::Ok, tonic::Code::NotFound] {
            get.started();
            get.handled(code, Duration::from_millis(2));
        }
        let text = metrics.render();
        let labels = r#"grpc_type="unary",grpc_service="s.v1.S",grpc_method="Get""#;
        assert_eq!(
            value(&text, &format!("grpc_server_started_total{{{labels}}}")),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("grpc_server_handled_total{{{labels},grpc_code=\"OK\"}}")
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("grpc_server_handled_total{{{labels},grpc_code=\"NotFound\"}}")
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("grpc_server_handling_seconds_count{{{labels}}}")
            ),
            Some(3.0),
            "{text}"
        );
        // Codes that did not happen, and a method never called, have no series.
        assert!(!text.contains("Internal"), "{text}");
        assert!(!text.contains("\"Put\""), "{text}");
        drop(put);
    }
}
