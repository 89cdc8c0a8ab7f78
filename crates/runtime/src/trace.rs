//! W3C trace context (`traceparent`) through gRPC metadata.
//!
//! A call's trace id is the caller's, or a new one; it is on the call's
//! span (so every log line of the call carries `trace_id`), and calls to
//! peers made while handling it send a `traceparent` with the same trace
//! id and this call's span id as the parent, so one request can be
//! followed across services. With span export on, the ids are the exported
//! span's, so logs and traces agree.

use std::future::Future;

use http::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::RngCore;
use tracing_opentelemetry::OpenTelemetrySpanExt;

tokio::task_local! {
    static CURRENT: TraceContext;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceContext {
    /// The caller's context from `traceparent`; `None` when absent or
    /// malformed (the W3C spec then asks to restart the trace).
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
    }

    /// A new span in the caller's trace, or the root of a new trace.
    pub fn child_of(caller: Option<Self>) -> Self {
        match caller {
            Some(parent) => Self {
                span_id: random_span_id(),
                ..parent
            },
            None => Self::new_root(),
        }
    }

    /// The span of a server call to `path` (not yet entered), with the
    /// call's `trace_id` on it, and the call's own context: the child of the
    /// caller's `traceparent` in `headers`, or the root of a new trace.
    ///
    /// The span gets its fields when it is created: recording one later
    /// makes the JSON log layer parse the span's fields and write them
    /// again, on every call. Only with span export on and no caller does the
    /// trace id come from the exporter, after the span exists, and get
    /// recorded then.
    pub fn call_span(path: &str, headers: &HeaderMap) -> (tracing::Span, Self) {
        let caller = Self::from_headers(headers);
        let ours = Self::child_of(caller);
        // Both fields are plain `&str`s, which a subscriber records as they
        // are (`%` values go through the formatting machinery).
        let mut hex = [0u8; 32];
        let span = tracing::info_span!(
            "grpc",
            method = path,
            trace_id = trace_id_str(&ours.trace_id, &mut hex),
        );
        let call = Self::enter_call(&span, caller).unwrap_or(ours);
        if call.trace_id != ours.trace_id {
            span.record("trace_id", trace_id_str(&call.trace_id, &mut hex));
        }
        (span, call)
    }

    /// Makes `span` (a server call's, not yet entered) the child of
    /// `caller` and returns the exported span's ids; `None` when spans are
    /// not exported.
    fn enter_call(span: &tracing::Span, caller: Option<Self>) -> Option<Self> {
        if let Some(c) = caller {
            let flags = if c.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            let remote = SpanContext::new(
                TraceId::from_bytes(c.trace_id),
                SpanId::from_bytes(c.span_id),
                flags,
                true,
                TraceState::default(),
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let exported = span.context().span().span_context().clone();
        exported.is_valid().then(|| Self {
            trace_id: exported.trace_id().to_bytes(),
            span_id: exported.span_id().to_bytes(),
            sampled: exported.is_sampled(),
        })
    }

    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        while trace_id == [0; 16] {
            rand::rng().fill_bytes(&mut trace_id);
        }
        Self {
            trace_id,
            span_id: random_span_id(),
            sampled: true,
        }
    }

    /// Parses version 00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2
            || flags.len() != 2
            || version == "ff"
            || (version == "00" && parts.next().is_some())
        {
            return None;
        }
        let trace_id: [u8; 16] = hex(trace)?.try_into().ok()?;
        let span_id: [u8; 8] = hex(parent)?.try_into().ok()?;
        let flags = *hex(flags)?.first()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The header value naming this context as the parent.
    /// Built on every call to a peer, so without `format!` (measured: the
    /// per-byte formatting was 2% of the load generator's CPU).
    pub fn to_traceparent(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.span_id);
        out.push_str(if self.sampled { "-01" } else { "-00" });
        out
    }

    /// Runs `future` with this as the current context.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }

    /// The context of the call being handled, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|c| *c).ok()
    }
}

fn random_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        rand::rng().fill_bytes(&mut id);
    }
    id
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2)
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Lower-case hex of a trace id, written into `buf`, without allocating.
fn trace_id_str<'a>(id: &[u8; 16], buf: &'a mut [u8; 32]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in id.iter().enumerate() {
        buf[2 * i] = DIGITS[usize::from(b >> 4)];
        buf[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    // Hex digits are ASCII.
    std::str::from_utf8(buf).unwrap_or_default()
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_the_spec_example() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(value).unwrap();
        assert!(ctx.sampled);
        assert_eq!(ctx.to_traceparent(), value);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(
            TraceContext::parse(unsampled).unwrap().to_traceparent(),
            unsampled
        );
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    /// JSON log lines written while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        let sink = crate::telemetry::tests::Sink::default();
        let settings = crate::config::LogSettings {
            format: crate::config::LogFormat::Json,
            filter: "info".into(),
        };
        let writer = sink.clone();
        let subscriber = crate::telemetry::subscriber(&settings, move || writer.clone(), None);
        tracing::subscriber::with_default(subscriber, f);
        sink.text()
    }

    /// Headers carrying the W3C spec's example `traceparent`.
    fn with_caller() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        headers
    }

    #[test]
    fn a_calls_log_lines_carry_its_method_and_trace_id() {
        let path = "/patron.scoring.v1.ScoringService/GetScore";
        let headers = with_caller();
        let mut own = None;
        let logs = logged(|| {
            let (span, call) = TraceContext::call_span(path, &headers);
            span.in_scope(|| tracing::info!("inside the caller's trace"));
            let (span, root) = TraceContext::call_span(path, &HeaderMap::new());
            span.in_scope(|| tracing::info!("inside a new trace"));
            assert_eq!(call.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
            own = Some(root);
        });
        let lines: Vec<serde_json::Value> = logs
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{logs}");
        let span_field =
            |line: &serde_json::Value, key: &str| line["spans"][0][key].as_str().map(str::to_owned);
        assert_eq!(span_field(&lines[0], "method").as_deref(), Some(path));
        assert_eq!(
            span_field(&lines[0], "trace_id").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{logs}"
        );
        // Without a caller: the new trace's id, the one the call's peers get.
        let own = own.unwrap();
        assert_ne!(own.trace_id, [0; 16]);
        assert_eq!(
            span_field(&lines[1], "trace_id"),
            Some(own.trace_id_hex()),
            "{logs}"
        );
    }

    #[test]
    fn a_call_keeps_the_callers_trace_with_a_new_span() {
        let headers = with_caller();
        let caller = TraceContext::from_headers(&headers);
        let ctx = TraceContext::child_of(caller);
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            trace_id_str(&ctx.trace_id, &mut [0; 32]),
            ctx.trace_id_hex()
        );
        assert_ne!(to_hex(&ctx.span_id), "00f067aa0ba902b7");
        assert_eq!(TraceContext::from_headers(&HeaderMap::new()), None);
        assert_ne!(TraceContext::child_of(None).trace_id, [0; 16]);
    }
}
