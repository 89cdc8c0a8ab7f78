//! The load generator's own gRPC client (`patron bench scores`): unary calls
//! straight over HTTP/2 (the h2 crate), one single-threaded tokio runtime
//! per core, each with its own connections and callers.
//!
//! Why not the tonic client the rest of the CLI uses: the goal for cached
//! `GetScore` counts the generator, on the same two cores as the server, and
//! at 64 calls in flight the tonic client cost as much CPU per call as the
//! server it measured (about 46 µs each, BENCHMARKS.md, session 11). A
//! `Channel` passes every request to a buffer task, then to hyper's
//! dispatcher, then to h2, and the tasks of one multi-threaded runtime wake
//! each other across threads. Here a request is encoded once, before the
//! run; a caller sends it on an h2 stream from its own task, and the
//! connection's task, on the same thread, writes what every caller queued in
//! one go. The answer is checked as a gRPC client must: HTTP status, the
//! `grpc-status` trailer (or a trailers-only error), the message framing;
//! the callers decode the message themselves.
//!
//! It is a client for load and nothing else: plain TCP, no reconnects, no
//! retries, no compression.

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Uri, header};

use crate::client::Target;

/// One RPC of the server under load: the request head every call sends.
#[derive(Clone)]
pub(crate) struct Method {
    uri: Uri,
    headers: HeaderMap,
}

impl Method {
    /// `path` is the RPC's, e.g. `/patron.scoring.v1.ScoringService/GetScore`.
    pub(crate) fn new(target: &Target, path: &str) -> anyhow::Result<Self> {
        let endpoint: Uri = target.endpoint.parse()?;
        anyhow::ensure!(
            endpoint.scheme_str() == Some("http"),
            "the load generator speaks plain http://, not {}",
            target.endpoint
        );
        let authority = endpoint
            .authority()
            .ok_or_else(|| anyhow::anyhow!("no host in {}", target.endpoint))?;
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query(path)
            .build()?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        if let Some(token) = &target.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        Ok(Self { uri, headers })
    }
}

/// A message as gRPC frames it on the wire: uncompressed flag, length, bytes.
pub(crate) fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.extend_from_slice(&[0]);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    message
        .encode(&mut buf)
        .expect("the buffer was sized for the message");
    buf.freeze()
}

/// One HTTP/2 connection, shared by the callers of one thread.
#[derive(Clone)]
pub(crate) struct Connection {
    send: h2::client::SendRequest<Bytes>,
}

impl Connection {
    async fn open(authority: &str) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(authority).await?;
        tcp.set_nodelay(true)?;
        // Windows large enough that a batch answer never waits for a
        // WINDOW_UPDATE.
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(4 << 20)
            .initial_connection_window_size(64 << 20)
            .handshake(tcp)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "load connection closed");
            }
        });
        Ok(Self { send })
    }

    /// One unary call: sends `request` (a [`frame`]) and returns the answer's
    /// message bytes, or the call's status if it failed.
    pub(crate) async fn call(
        &mut self,
        method: &Method,
        request: Bytes,
    ) -> Result<Bytes, tonic::Status> {
        let mut head = http::Request::new(());
        *head.method_mut() = http::Method::POST;
        *head.uri_mut() = method.uri.clone();
        *head.headers_mut() = method.headers.clone();
        futures::future::poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(transport)?;
        let (response, mut body) = self.send.send_request(head, false).map_err(transport)?;
        body.send_data(request, true).map_err(transport)?;
        let response = response.await.map_err(transport)?;
        if response.status() != http::StatusCode::OK {
            return Err(tonic::Status::unknown(format!(
                "HTTP status {}",
                response.status()
            )));
        }
        // A trailers-only answer: the status is in the headers.
        if let Some(status) = failed(response.headers()) {
            return Err(status);
        }
        let mut body = response.into_body();
        let mut message: Option<Bytes> = None;
        let mut more = BytesMut::new();
        while let Some(data) = body.data().await {
            let data = data.map_err(transport)?;
            let _ = body.flow_control().release_capacity(data.len());
            match &message {
                None => message = Some(data),
                Some(first) => {
                    if more.is_empty() {
                        more.extend_from_slice(first);
                    }
                    more.extend_from_slice(&data);
                }
            }
        }
        let trailers = body.trailers().await.map_err(transport)?;
        match trailers.as_ref().map(failed) {
            Some(None) => {}
            Some(Some(status)) => return Err(status),
            None => return Err(tonic::Status::internal("the answer has no trailers")),
        }
        let mut message = if more.is_empty() {
            message.unwrap_or_default()
        } else {
            more.freeze()
        };
        if message.len() < 5 || message[0] != 0 {
            return Err(tonic::Status::internal("not one uncompressed gRPC message"));
        }
        message.advance(1);
        let len = message.get_u32() as usize;
        if len != message.len() {
            return Err(tonic::Status::internal(format!(
                "a message of {len} bytes announced, {} sent",
                message.len()
            )));
        }
        Ok(message)
    }
}

/// The call's status if `headers` carry a failed one; `None` for OK or no
/// status at all (the caller decides whether one was due).
fn failed(headers: &HeaderMap) -> Option<tonic::Status> {
    match headers.get("grpc-status") {
        None => None,
        Some(code) if code.as_bytes() == b"0" => None,
        Some(_) => tonic::Status::from_header_map(headers),
    }
}

fn transport(e: h2::Error) -> tonic::Status {
    tonic::Status::unavailable(format!("HTTP/2: {e}"))
}

/// What a closed-loop run measured.
pub(crate) struct Outcome {
    /// Connections used: at least one per thread.
    pub(crate) connections: usize,
    pub(crate) calls: u64,
    /// What the calls returned in all (scores, for a batch call).
    pub(crate) items: u64,
    pub(crate) elapsed: Duration,
    /// Every call's latency, sorted.
    pub(crate) latencies: Vec<Duration>,
}

impl Outcome {
    pub(crate) fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency below which a fraction `q` of the calls finished.
    pub(crate) fn percentile(&self, q: f64) -> Duration {
        self.latencies
            .get(((self.latencies.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// Runs `in_flight` callers, each calling `call` back to back for
/// `duration`, over `connections` connections to `target`. The callers and
/// connections are spread over one single-threaded runtime per core (so
/// one connection's callers and its task never wake each other across
/// threads). `call` gets a connection and a pseudo-random number (to pick
/// its request) and returns how many items the answer held.
pub(crate) async fn closed_loop<F>(
    target: &Target,
    connections: usize,
    in_flight: usize,
    duration: Duration,
    call: F,
) -> anyhow::Result<Outcome>
where
    F: AsyncFn(&mut Connection, u64) -> Result<u64, tonic::Status> + Clone + Send + 'static,
{
    let authority = target
        .endpoint
        .parse::<Uri>()?
        .authority()
        .ok_or_else(|| anyhow::anyhow!("no host in {}", target.endpoint))?
        .to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(in_flight).max(1);
    let connections = connections.max(threads);
    // Every thread connects first; the clock starts when all have.
    let ready = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let mut workers = Vec::new();
    for thread in 0..threads {
        // This thread's share: callers and connections numbered `thread`
        // modulo `threads`.
        let share = |n: usize| (thread..n).step_by(threads).count();
        let (callers, conns) = (share(in_flight), share(connections));
        let (authority, call, ready) = (authority.clone(), call.clone(), ready.clone());
        workers.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let opened = async {
                    let mut opened = Vec::new();
                    for _ in 0..conns {
                        opened.push(Connection::open(&authority).await?);
                    }
                    anyhow::Ok(opened)
                }
                .await;
                // Blocking is harmless here: nothing else runs on this
                // thread yet. A thread that could not connect waits too, so
                // that none waits for it forever.
                ready.wait();
                let opened = opened?;
                let started = Instant::now();
                let until = started + duration;
                let mut running: futures::stream::FuturesUnordered<_> = (0..callers)
                    .map(|k| {
                        let mut connection = opened[k % opened.len()].clone();
                        let call = call.clone();
                        let worker = (thread + k * threads) as u64 + 1;
                        async move {
                            let mut seed =
                                0x9E37_79B9_7F4A_7C15u64 ^ worker.wrapping_mul(0x1234_5678_9ABC);
                            let mut latencies = Vec::new();
                            let mut items = 0;
                            while Instant::now() < until {
                                let t = Instant::now();
                                items += call(&mut connection, xorshift(&mut seed)).await?;
                                latencies.push(t.elapsed());
                            }
                            Ok::<_, tonic::Status>((latencies, items))
                        }
                    })
                    .collect();
                let mut latencies = Vec::new();
                let mut items = 0;
                while let Some(caller) = running.next().await {
                    let (l, i) = caller?;
                    latencies.extend(l);
                    items += i;
                }
                Ok::<_, anyhow::Error>((latencies, items, started.elapsed()))
            })
        }));
    }
    let joined = tokio::task::spawn_blocking(move || {
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;
    let mut outcome = Outcome {
        connections,
        calls: 0,
        items: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for (latencies, items, elapsed) in joined {
        outcome.latencies.extend(latencies);
        outcome.items += items;
        outcome.elapsed = outcome.elapsed.max(elapsed);
    }
    outcome.latencies.sort_unstable();
    outcome.calls = outcome.latencies.len() as u64;
    Ok(outcome)
}

/// A cheap deterministic index sequence (xorshift), so the generator's own
/// cost stays out of the figures.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response};

    use super::*;

    /// A real tonic server (the standard health service) on a free port.
    async fn health_server() -> Target {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (_, service) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Target {
            endpoint,
            token: None,
        }
    }

    fn check(service: &str) -> Bytes {
        frame(&HealthCheckRequest {
            service: service.into(),
        })
    }

    #[tokio::test]
    async fn a_call_returns_the_answers_message() {
        let target = health_server().await;
        let method = Method::new(&target, "/grpc.health.v1.Health/Check").unwrap();
        let mut connection = Connection::open(target.endpoint.trim_start_matches("http://"))
            .await
            .unwrap();
        for _ in 0..3 {
            let answer = connection.call(&method, check("")).await.unwrap();
            let answer = HealthCheckResponse::decode(answer).unwrap();
            assert_eq!(
                answer.status(),
                health_check_response::ServingStatus::Serving
            );
        }
    }

    #[tokio::test]
    async fn a_failed_call_returns_its_status() {
        let target = health_server().await;
        let mut connection = Connection::open(target.endpoint.trim_start_matches("http://"))
            .await
            .unwrap();
        let method = Method::new(&target, "/grpc.health.v1.Health/Check").unwrap();
        let status = connection
            .call(&method, check("no.such.Service"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        let method = Method::new(&target, "/grpc.health.v1.Health/NoSuchMethod").unwrap();
        let status = connection.call(&method, check("")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
        // A request that is not a gRPC message at all.
        let method = Method::new(&target, "/grpc.health.v1.Health/Check").unwrap();
        let status = connection
            .call(&method, Bytes::from_static(b"\x00\x00\x00\x00\x09\xff"))
            .await
            .unwrap_err();
        assert_ne!(status.code(), tonic::Code::Ok);
    }

    /// A closed loop of health checks of `service`, each counting `items`.
    async fn checks(
        service: &str,
        connections: usize,
        in_flight: usize,
        duration: Duration,
        items: u64,
    ) -> anyhow::Result<Outcome> {
        let target = health_server().await;
        let method = Method::new(&target, "/grpc.health.v1.Health/Check").unwrap();
        let request = check(service);
        let call = async move |connection: &mut Connection, _| {
            connection.call(&method, request.clone()).await?;
            Ok(items)
        };
        closed_loop(&target, connections, in_flight, duration, call).await
    }

    #[tokio::test]
    async fn a_closed_loop_counts_every_call_and_spreads_over_the_threads() {
        let run = checks("", 3, 8, Duration::from_millis(300), 2)
            .await
            .unwrap();
        assert!(run.calls > 8, "{} calls", run.calls);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(run.connections, 3.max(cores.min(8)));
        assert_eq!(run.items, 2 * run.calls);
        assert_eq!(run.latencies.len() as u64, run.calls);
        assert!(run.latencies.windows(2).all(|w| w[0] <= w[1]), "sorted");
        assert!(run.elapsed >= Duration::from_millis(300));
        assert!(run.percentile(0.5) <= run.percentile(0.99));
    }

    #[tokio::test]
    async fn a_failing_call_ends_the_run_with_its_status() {
        let failed = checks("no.such.Service", 2, 4, Duration::from_secs(5), 1)
            .await
            .err()
            .expect("the run fails");
        let status = failed.downcast_ref::<tonic::Status>().expect("a status");
        assert_eq!(status.code(), tonic::Code::NotFound);
    }

    #[test]
    fn only_plain_http_endpoints_are_accepted() {
        let target = |endpoint: &str| Target {
            endpoint: endpoint.into(),
            token: Some("secret".into()),
        };
        let method = Method::new(&target("http://127.0.0.1:1"), "/a.B/C").unwrap();
        assert_eq!(method.uri, "http://127.0.0.1:1/a.B/C");
        assert_eq!(method.headers[header::AUTHORIZATION], "Bearer secret");
        assert!(method.headers[header::AUTHORIZATION].is_sensitive());
        assert!(Method::new(&target("https://127.0.0.1:1"), "/a.B/C").is_err());
    }
}
