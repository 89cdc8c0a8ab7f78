//! W3C trace context (`traceparent`) through gRPC metadata.
//!
//! A call's trace id is the caller's, or a new one; it is on the call's
//! span (so every log line of the call carries `trace_id`), and calls to
//! peers made while handling it send a `traceparent` with the same trace
//! id and a new parent id, so one request can be followed across services.

use std::future::Future;

use http::HeaderMap;
use rand::RngCore;

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
    /// The caller's context from `traceparent`, or a new trace when it is
    /// absent or malformed (as the W3C spec asks: restart the trace).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(Self::parse)
            .map(|parent| Self {
                span_id: random_span_id(),
                ..parent
            })
            .unwrap_or_else(Self::new_root)
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
    pub fn to_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            to_hex(&self.trace_id),
            to_hex(&self.span_id),
            u8::from(self.sampled)
        )
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

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    #[test]
    fn a_call_keeps_the_callers_trace_with_a_new_span() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let ctx = TraceContext::from_headers(&headers);
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(to_hex(&ctx.span_id), "00f067aa0ba902b7");
        assert_ne!(
            TraceContext::from_headers(&HeaderMap::new()).trace_id,
            [0; 16]
        );
    }
}
