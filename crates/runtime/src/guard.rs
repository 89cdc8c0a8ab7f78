//! The layer every gRPC call passes before its handler, in this order:
//! metrics (started, handled with the final code, handling time up to the
//! end of the stream), authentication (bearer token or JWT; health always
//! open), the per-client rate limit, load shedding above `max_in_flight`,
//! W3C trace context (the caller's `traceparent`, or a new trace, on
//! the call's span and on calls it makes to peers), and the deadline.
//!
//! Rejections are ordinary gRPC statuses built by [`crate::to_status`], so
//! they carry the same `ErrorInfo` / `RetryInfo` details as handler errors.

use std::{
    collections::HashMap,
    convert::Infallible,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use patron_domain::{ApiError, ErrorCode};
use prost::Message;
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::{
    config::{AuthSettings, JwtSettings, LimitSettings},
    metrics::{MethodLabels, MethodMetrics, Metrics, Rejection},
    to_status,
    trace::TraceContext,
};

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// The client name of calls carrying this deployment's peer token (the
/// services' own calls to each other). They are not rate limited: their
/// volume is set by the followers' poll intervals, and starving them would
/// stall every service's view of the others.
const PEER_CLIENT: &str = "peer";

/// Builds the guard from settings. Invalid JWT settings fail here, at start.
#[derive(Clone)]
pub struct GuardLayer {
    shared: Arc<Shared>,
}

struct Shared {
    metrics: Metrics,
    /// Deadline of calls that carry no `grpc-timeout`.
    default_timeout: Duration,
    methods: MethodTable,
    auth: Option<Authenticator>,
    limiter: Option<RateLimiter>,
    in_flight: Option<Arc<Semaphore>>,
}

impl GuardLayer {
    pub fn new(
        auth: &AuthSettings,
        limits: &LimitSettings,
        default_timeout: Duration,
        metrics: Metrics,
    ) -> Result<Self, crate::config::ConfigError> {
        let auth = if auth.enabled() {
            Some(Authenticator::new(auth)?)
        } else {
            None
        };
        Ok(Self {
            shared: Arc::new(Shared {
                methods: MethodTable::new(&metrics),
                metrics,
                default_timeout,
                auth,
                limiter: (limits.rate_per_client > 0.0)
                    .then(|| RateLimiter::new(limits.rate_per_client, limits.burst)),
                in_flight: (limits.max_in_flight > 0)
                    .then(|| Arc::new(Semaphore::new(limits.max_in_flight as usize))),
            }),
        })
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B, ResBody> Service<Request<B>> for Guard<S>
where
    S: Service<Request<B>, Response = Response<ResBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Default + Unpin + Send + 'static,
{
    type Response = Response<Metered<ResBody>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone is not ready; the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let start = Instant::now();
            let method = shared.methods.get(req.uri().path());
            method.started();
            let finish = |response: Response<ResBody>, permit| {
                let response = undecodable_is_invalid_argument(response);
                Metered::wrap(response, method.clone(), start, permit)
            };

            let admitted = shared.admit(&req, method.labels());
            let permit = match admitted {
                Ok(permit) => permit,
                Err(status) => return Ok(finish(status.into_http(), None)),
            };
            let (span, trace) = TraceContext::call_span(req.uri().path(), req.headers());
            let deadline = call_deadline(req.headers(), shared.default_timeout);
            let handled = within(
                start + deadline,
                trace.scope(inner.call(req)).instrument(span),
            )
            .await;
            let response = match handled {
                Some(response) => response.unwrap_or_else(|never| match never {}),
                // Dropping the handler cancels its work (a database query
                // in flight gives its connection back closed).
                None => to_status(ApiError::new(
                    ErrorCode::DeadlineExceeded,
                    "DEADLINE_EXCEEDED",
                    format!(
                        "the call did not finish within its deadline ({} ms)",
                        deadline.as_millis()
                    ),
                ))
                .into_http(),
            };
            Ok(finish(response, permit))
        })
    }
}

impl Shared {
    /// Authentication, rate limit and load shedding; the permit (if any)
    /// is held until the call's response ends.
    fn admit<B>(
        &self,
        req: &Request<B>,
        method: &MethodLabels,
    ) -> Result<Option<OwnedSemaphorePermit>, tonic::Status> {
        if method.grpc_service == HEALTH_SERVICE {
            // Probes must work without credentials and under load.
            return Ok(None);
        }
        let client = match &self.auth {
            Some(auth) => auth.authenticate(req.headers()).map_err(|e| {
                self.metrics.rejected(Rejection::Unauthenticated);
                to_status(e)
            })?,
            None => peer_ip(req).unwrap_or_else(|| "unknown".into()),
        };
        if let Some(limiter) = &self.limiter
            && client != PEER_CLIENT
            && let Err(retry_after) = limiter.check(&client)
        {
            self.metrics.rejected(Rejection::RateLimited);
            let mut err = ApiError::new(
                ErrorCode::ResourceExhausted,
                "RATE_LIMITED",
                format!(
                    "rate limit exceeded for this client; retry in {} ms",
                    retry_after.as_millis().max(1)
                ),
            );
            err.retry_after = Some(retry_after);
            return Err(to_status(err));
        }
        match &self.in_flight {
            None => Ok(None),
            Some(semaphore) => match semaphore.clone().try_acquire_owned() {
                Ok(permit) => Ok(Some(permit)),
                Err(_) => {
                    self.metrics.rejected(Rejection::Overloaded);
                    let mut err = ApiError::new(
                        ErrorCode::Unavailable,
                        "OVERLOADED",
                        "the server is at its limit of calls in progress; retry (another replica may take it)",
                    );
                    err.retry_after = Some(Duration::from_millis(100));
                    Err(to_status(err))
                }
            },
        }
    }
}

/// Runs `call` until `deadline`; `None` when the deadline passed first.
///
/// The timer is armed only if the call has to wait: most calls (a cached
/// score) finish in their first poll, and a tokio timer reads the clock when
/// it is made and takes the runtime's timer-wheel lock when it is dropped,
/// armed or not. With the call span's fields written once (see
/// [`TraceContext::call_span`]) this took 5% of the server's instructions
/// off a cached `GetScore` (callgrind, BENCHMARKS.md, session 11).
async fn within<F: Future>(deadline: Instant, call: F) -> Option<F::Output> {
    let mut call = std::pin::pin!(call);
    if let Poll::Ready(done) = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await
    {
        return Some(done);
    }
    tokio::time::timeout_at(deadline.into(), call).await.ok()
}

/// How long a call may take: the caller's `grpc-timeout`, capped by the
/// server's default, and a little early (a tenth, at most 50 ms): so that
/// this answer, DEADLINE_EXCEEDED as the spec has it, reaches the caller
/// before its own timer goes off (tonic's client timer reports CANCELLED,
/// and so does tonic's server timer, which runs outside this layer).
fn call_deadline(headers: &HeaderMap, default: Duration) -> Duration {
    let requested = headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    let deadline = requested.map_or(default, |r| r.min(default));
    let early = (deadline / 10).min(Duration::from_millis(50));
    (deadline - early).max(Duration::from_millis(1))
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn peer_ip<B>(req: &Request<B>) -> Option<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
        .map(|a| a.ip().to_string())
}

/// Who is calling: a configured bearer token or a verified JWT.
struct Authenticator {
    /// (client name for rate limits and logs, token bytes)
    tokens: Vec<(String, Vec<u8>)>,
    jwt: Option<JwtVerifier>,
}

struct JwtVerifier {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

#[derive(serde::Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
}

impl Authenticator {
    fn new(settings: &AuthSettings) -> Result<Self, crate::config::ConfigError> {
        let peer = settings
            .outgoing_token()
            .map(|t| t.expose_secret().trim().as_bytes().to_vec());
        let mut tokens: Vec<(String, Vec<u8>)> = settings
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let token = t.expose_secret().trim().as_bytes().to_vec();
                let name = if peer.as_ref() == Some(&token) {
                    PEER_CLIENT.to_owned()
                } else {
                    format!("token-{}", i + 1)
                };
                (name, token)
            })
            .collect();
        // A peer token that is not among `tokens` (e.g. with JWT for
        // everyone else) is accepted too: the services must reach each other.
        if let Some(peer) = peer
            && !tokens.iter().any(|(_, t)| *t == peer)
        {
            tokens.push((PEER_CLIENT.to_owned(), peer));
        }
        let jwt = settings.jwt.as_ref().map(JwtVerifier::new).transpose()?;
        Ok(Self { tokens, jwt })
    }

    /// The client's name, or UNAUTHENTICATED / PERMISSION_DENIED. The
    /// messages never echo the credential.
    fn authenticate(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let unauthenticated =
            |msg: &str| ApiError::new(ErrorCode::Unauthenticated, "UNAUTHENTICATED", msg);
        let header = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
            unauthenticated("missing credentials: send `authorization: Bearer <token>`")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthenticated("the authorization header must be `Bearer <token>`"))?;
        for (name, known) in &self.tokens {
            if constant_time_eq(token.as_bytes(), known) {
                return Ok(name.clone());
            }
        }
        match &self.jwt {
            Some(jwt) => jwt.verify(token),
            None => Err(unauthenticated("the bearer token is not valid")),
        }
    }
}

impl JwtVerifier {
    fn new(settings: &JwtSettings) -> Result<Self, crate::config::ConfigError> {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};
        let bad = |what: String| crate::config::ConfigError::new(format!("auth.jwt.{what}"));
        let algorithm: Algorithm = settings.algorithm.parse().map_err(|_| {
            bad(format!(
                "algorithm: {:?} is not a JWT algorithm",
                settings.algorithm
            ))
        })?;
        let pem = settings.key.expose_secret().as_bytes();
        let key = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                Ok(DecodingKey::from_secret(pem))
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        }
        .map_err(|e| bad(format!("key: not a PEM public key for {algorithm:?}: {e}")))?;
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = settings.leeway_secs;
        Ok(Self { key, validation })
    }

    /// A token with a bad signature, expired or malformed is
    /// UNAUTHENTICATED; a genuine token minted for another issuer or
    /// audience is PERMISSION_DENIED.
    fn verify(&self, token: &str) -> Result<String, ApiError> {
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) => Ok(format!(
                "jwt:{}",
                data.claims.sub.unwrap_or_else(|| "anonymous".into())
            )),
            Err(e) => Err(match e.kind() {
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => ApiError::new(
                    ErrorCode::PermissionDenied,
                    "PERMISSION_DENIED",
                    "the token was not issued for this service (issuer or audience)",
                ),
                ErrorKind::ExpiredSignature => ApiError::new(
                    ErrorCode::Unauthenticated,
                    "UNAUTHENTICATED",
                    "the token has expired",
                ),
                _ => ApiError::new(
                    ErrorCode::Unauthenticated,
                    "UNAUTHENTICATED",
                    "the bearer token is not valid",
                ),
            }),
        }
    }
}

/// Compares without an early exit, so the time taken does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token bucket per client.
struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Beyond this many clients, buckets that have refilled are forgotten.
const MAX_TRACKED_CLIENTS: usize = 100_000;

impl RateLimiter {
    fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token, or says how long until one is available.
    fn check(&self, client: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(client) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(client.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.updated).as_secs_f64() * self.rate)
            .min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

/// The metrics of each RPC this server knows (from the descriptor sets it
/// serves), by path, so that random paths from a client cannot grow the
/// label set: anything else is `unknown`. Built once; a call looks up its
/// path without allocating.
struct MethodTable {
    methods: HashMap<String, Arc<MethodMetrics>, foldhash::fast::RandomState>,
    unknown: Arc<MethodMetrics>,
}

impl MethodTable {
    fn new(metrics: &Metrics) -> Self {
        let mut methods = HashMap::default();
        let mut add = |service: &str, method: &str, kind: &'static str| {
            let labels = MethodLabels {
                grpc_type: kind,
                grpc_service: service.to_owned(),
                grpc_method: method.to_owned(),
            };
            methods.insert(
                format!("/{service}/{method}"),
                Arc::new(metrics.method(labels)),
            );
        };
        for encoded in [
            patron_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
                continue;
            };
            for file in set.file {
                let package = file.package();
                for service in &file.service {
                    let service_name = format!("{package}.{}", service.name());
                    for m in &service.method {
                        let kind = match (m.client_streaming(), m.server_streaming()) {
                            (false, false) => "unary",
                            (false, true) => "server_stream",
                            (true, false) => "client_stream",
                            (true, true) => "bidi_stream",
                        };
                        add(&service_name, m.name(), kind);
                    }
                }
            }
        }
        add(
            "grpc.reflection.v1.ServerReflection",
            "ServerReflectionInfo",
            "bidi_stream",
        );
        let unknown = Arc::new(metrics.method(MethodLabels {
            grpc_type: "unknown",
            grpc_service: "unknown".into(),
            grpc_method: "unknown".into(),
        }));
        Self { methods, unknown }
    }

    fn get(&self, path: &str) -> Arc<MethodMetrics> {
        self.methods.get(path).unwrap_or(&self.unknown).clone()
    }
}

/// A response body that records the call's final status when the last
/// frame (the trailers) passes, or when it is dropped early (the client
/// went away: CANCELLED). Holds the in-flight permit until then.
pub struct Metered<B> {
    inner: B,
    pending: Option<Pending>,
}

struct Pending {
    method: Arc<MethodMetrics>,
    start: Instant,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Pending {
    fn finish(self, code: tonic::Code) {
        self.method.handled(code, self.start.elapsed());
    }
}

impl<B> Metered<B> {
    fn wrap(
        response: Response<B>,
        method: Arc<MethodMetrics>,
        start: Instant,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Response<Self> {
        let pending = Pending {
            method,
            start,
            _permit: permit,
        };
        let mut response = response;
        oversized_is_resource_exhausted(response.headers_mut());
        // A status in the headers is a trailers-only response: the call is over.
        let pending = match grpc_status(response.headers()) {
            Some(code) => {
                pending.finish(code);
                None
            }
            None => Some(pending),
        };
        response.map(|inner| Self { inner, pending })
    }
}

/// tonic answers a request larger than `server.max_message_bytes` with
/// OUT_OF_RANGE; the gRPC status-code spec prescribes RESOURCE_EXHAUSTED
/// ("message size exceeds limits"). No handler of ours returns OUT_OF_RANGE
/// (`ErrorCode` has no such variant), so every one is the codec's.
fn oversized_is_resource_exhausted(headers: &mut HeaderMap) {
    if headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11")
    {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from_static("8"), // RESOURCE_EXHAUSTED
        );
    }
}

/// How tonic's codec begins its message for a request it cannot read:
/// bytes that are not the request's protobuf message, and compressed bytes
/// that do not inflate (tests/tests/hostile.rs pins both, so a tonic
/// upgrade that rewords them fails there, not in production).
const UNDECODABLE: [&str; 2] = ["failed to decode Protobuf message", "Error decompressing"];

/// tonic answers a request whose message does not decode with INTERNAL (as
/// gRPC's status-code table has it). Here INTERNAL means a fault of ours,
/// the code operators are paged for; bytes a client sent that cannot be
/// read are the client's mistake, so they get INVALID_ARGUMENT (reason
/// `MALFORMED_REQUEST`) with the library's explanation. Only the codec's
/// answers match: trailers-only, without the details every status of ours
/// carries, and with one of the [`UNDECODABLE`] messages.
fn undecodable_is_invalid_argument<B: Default>(response: Response<B>) -> Response<B> {
    let headers = response.headers();
    if grpc_status(headers) != Some(tonic::Code::Internal)
        || headers.contains_key("grpc-status-details-bin")
    {
        return response;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return response;
    };
    if !UNDECODABLE.iter().any(|m| status.message().starts_with(m)) {
        return response;
    }
    to_status(ApiError::new(
        ErrorCode::InvalidArgument,
        "MALFORMED_REQUEST",
        format!("the request message cannot be read: {}", status.message()),
    ))
    .into_http()
}

fn grpc_status(headers: &HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from)
}

impl<B: Default> Default for Metered<B> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            pending: None,
        }
    }
}

impl<B> HttpBody for Metered<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|t| grpc_status(t).unwrap_or(tonic::Code::Unknown)),
            Poll::Ready(Some(Err(_))) => Some(tonic::Code::Internal),
            Poll::Ready(None) => Some(tonic::Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(pending) = this.pending.take()
        {
            pending.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.finish(tonic::Code::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_codecs_undecodable_requests_become_invalid_argument() {
        let rewritten = |status: tonic::Status| {
            let response: Response<tonic::body::Body> =
                undecodable_is_invalid_argument(status.into_http());
            tonic::Status::from_header_map(response.headers()).expect("a status")
        };
        let codec = rewritten(tonic::Status::internal(
            "failed to decode Protobuf message: invalid varint",
        ));
        assert_eq!(codec.code(), tonic::Code::InvalidArgument);
        assert!(codec.message().ends_with("invalid varint"), "{codec:?}");
        use tonic_types::StatusExt;
        let reason = codec
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone());
        assert_eq!(reason.as_deref(), Some("MALFORMED_REQUEST"));
        let inflate = rewritten(tonic::Status::internal(
            "Error decompressing: corrupt deflate stream",
        ));
        assert_eq!(inflate.code(), tonic::Code::InvalidArgument);
        // Other INTERNALs, ours (they carry details) and the library's, stay.
        let ours = rewritten(to_status(ApiError::new(
            ErrorCode::Internal,
            "STORE",
            "failed to decode Protobuf message from the store",
        )));
        assert_eq!(ours.code(), tonic::Code::Internal);
        let other = rewritten(tonic::Status::internal("Missing request message."));
        assert_eq!(other.code(), tonic::Code::Internal);
        let not_internal = rewritten(tonic::Status::not_found(
            "failed to decode Protobuf message",
        ));
        assert_eq!(not_internal.code(), tonic::Code::NotFound);
    }

    #[test]
    fn rate_limiter_allows_the_burst_then_says_when_to_retry() {
        let limiter = RateLimiter::new(10.0, 3);
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another client has its own bucket.
        assert!(limiter.check("b").is_ok());
    }

    #[tokio::test]
    async fn method_labels_are_bounded_to_known_rpcs() {
        let table = MethodTable::new(&crate::metrics::tests::metrics().await);
        let known = table.get("/patron.scoring.v1.ScoringService/GetScore");
        assert_eq!(
            known.labels().grpc_service,
            "patron.scoring.v1.ScoringService"
        );
        assert_eq!(known.labels().grpc_method, "GetScore");
        assert_eq!(known.labels().grpc_type, "unary");
        let stream = table.get("/patron.campaign.v1.CampaignService/StreamTargets");
        assert_eq!(stream.labels().grpc_type, "server_stream");
        let health = table.get("/grpc.health.v1.Health/Check");
        assert_eq!(health.labels().grpc_service, HEALTH_SERVICE);
        for junk in [
            "/made.up.Service/Whatever",
            "/patron.scoring.v1.ScoringService/",
            "patron.scoring.v1.ScoringService/GetScore",
            "",
        ] {
            assert_eq!(table.get(junk).labels().grpc_service, "unknown", "{junk}");
        }
    }

    #[test]
    fn a_call_that_finishes_at_once_arms_no_timer() {
        // This runtime has no timer: arming one would panic.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        assert_eq!(runtime.block_on(within(deadline, async { 7 })), Some(7));
    }

    #[tokio::test]
    async fn a_call_that_waits_ends_at_its_deadline() {
        let deadline = Instant::now() + Duration::from_millis(50);
        let slow = within(deadline, std::future::pending::<()>());
        assert_eq!(slow.await, None);
        assert!(Instant::now() >= deadline);
        // One that finishes after waiting, within its deadline.
        let deadline = Instant::now() + Duration::from_secs(30);
        let waits = within(deadline, async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            "done"
        });
        assert_eq!(waits.await, Some("done"));
    }

    #[test]
    fn grpc_timeout_header_and_default() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "m", "10", "123456789S", "5x", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
        let mut headers = HeaderMap::new();
        assert_eq!(
            call_deadline(&headers, Duration::from_secs(30)),
            Duration::from_millis(29_950)
        );
        headers.insert("grpc-timeout", "100m".parse().unwrap());
        assert_eq!(
            call_deadline(&headers, Duration::from_secs(30)),
            Duration::from_millis(90)
        );
        headers.insert("grpc-timeout", "1H".parse().unwrap());
        assert_eq!(
            call_deadline(&headers, Duration::from_secs(30)),
            Duration::from_millis(29_950)
        );
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
