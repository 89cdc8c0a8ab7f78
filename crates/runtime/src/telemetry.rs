//! Tracing setup: JSON in production, readable text on a terminal, and,
//! when `tracing.otlp_endpoint` is set, every span exported over OTLP/gRPC
//! to a collector (linked across services by W3C trace context, see
//! [`crate::trace`]).

use std::{fmt::Write as _, io::IsTerminal};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::{EnvFilter, Layer, fmt::MakeWriter, layer::SubscriberExt};

use crate::config::{ConfigError, LogFormat, LogSettings, TracingSettings};

/// Builds a subscriber writing logs to `sink` and, with `exporter`, spans
/// to it. `RUST_LOG` overrides `log.filter`.
pub fn subscriber<W>(
    settings: &LogSettings,
    sink: W,
    exporter: Option<&SdkTracerProvider>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .fmt_fields(JsonSpanFields)
            .with_writer(sink)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(sink)
            .boxed()
    };
    let spans = exporter.map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("patron")));
    Box::new(
        tracing_subscriber::registry()
            .with(logs)
            .with(spans)
            .with(filter),
    )
}

/// Writes a span's fields as the JSON object the JSON log format expects
/// (the same object as tracing-subscriber's `JsonFields`), straight into
/// the span's buffer.
///
/// Every gRPC call opens a span, and `JsonFields` builds a map of
/// `serde_json::Value`s per span, then serializes it through an adaptor
/// that checks each piece for UTF-8: 6,300 instructions per call, 8% of
/// the server's for a cached `GetScore` (callgrind, BENCHMARKS.md,
/// session 11). Fields recorded later are appended before the closing
/// brace instead of parsing and rewriting the object.
struct JsonSpanFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        // Written here first, then once into the span's (empty) buffer: it
        // grows once instead of doubling its way up piece by piece.
        let mut object = String::with_capacity(256);
        let mut visitor = JsonObject::new(&mut object);
        fields.record(&mut visitor);
        visitor.result?;
        object.push('}');
        writer.write_str(&object)
    }

    fn add_fields(
        &self,
        current: &'w mut tracing_subscriber::fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        if current.fields.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        // `{...}` without its `}`: the new fields go after the old ones.
        current.fields.pop();
        let empty = current.fields == "{";
        let mut visitor = JsonObject {
            out: &mut current.fields,
            first: empty,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result?;
        current.fields.push('}');
        Ok(())
    }
}

/// A JSON object being written field by field (without its closing brace).
struct JsonObject<'a, W: std::fmt::Write> {
    out: &'a mut W,
    first: bool,
    result: std::fmt::Result,
}

impl<'a, W: std::fmt::Write> JsonObject<'a, W> {
    fn new(out: &'a mut W) -> Self {
        let result = out.write_char('{');
        Self {
            out,
            first: true,
            result,
        }
    }

    /// Writes `"name":` and then the value with `value`.
    fn entry(
        &mut self,
        field: &tracing::field::Field,
        value: impl FnOnce(&mut W) -> std::fmt::Result,
    ) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            ","
        };
        self.result = (|| {
            self.out.write_str(separator)?;
            json_string(self.out, name)?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: std::fmt::Write> tracing::field::Visit for JsonObject<'_, W> {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        // As serde_json: a number, or null for NaN and the infinities.
        self.entry(field, |out| {
            if value.is_finite() {
                write!(out, "{value:?}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.entry(field, |out| json_string(out, value));
    }

    fn record_bytes(&mut self, field: &tracing::field::Field, value: &[u8]) {
        // As serde_json: an array of numbers.
        self.entry(field, |out| {
            out.write_char('[')?;
            for (i, b) in value.iter().enumerate() {
                if i > 0 {
                    out.write_char(',')?;
                }
                write!(out, "{b}")?;
            }
            out.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(JsonEscaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

fn json_string(out: &mut impl std::fmt::Write, value: &str) -> std::fmt::Result {
    out.write_char('"')?;
    JsonEscaped(out).write_str(value)?;
    out.write_char('"')
}

/// Escapes what passes through as the inside of a JSON string.
struct JsonEscaped<'a, W: std::fmt::Write>(&'a mut W);

impl<W: std::fmt::Write> std::fmt::Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        // Most values (methods, ids) need no escaping at all.
        if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            return self.0.write_str(s);
        }
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..0x20 => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

/// What [`init`] installed; [`Telemetry::shutdown`] flushes the spans
/// still buffered (call it before the process exits).
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends buffered spans now.
    pub async fn flush(&self) {
        if let Some(p) = self.provider.clone() {
            // The SDK blocks until the batch task (on this runtime) is done,
            // so it must wait off the runtime's worker threads.
            let done = tokio::task::spawn_blocking(move || p.force_flush()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "flushing spans failed");
            }
        }
    }

    pub async fn shutdown(self) {
        if let Some(p) = self.provider {
            let done = tokio::task::spawn_blocking(move || p.shutdown()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "span exporter shutdown failed");
            }
        }
    }
}

/// Installs the global subscriber, logging to stderr, exporting spans when
/// configured. Must run inside the Tokio runtime (the exporter lives on it).
/// A second call installs nothing.
pub fn init(
    log: &LogSettings,
    tracing: &TracingSettings,
    service_name: &str,
) -> Result<Telemetry, ConfigError> {
    let provider = match &tracing.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(std::time::Duration::from_secs(5))
                .build()
                .map_err(|e| ConfigError::new(format!("tracing.otlp_endpoint: {e}")))?;
            // The exporter is a tonic client, so batches are sent from a
            // task on this runtime (not the SDK's own thread, which has none).
            let batches = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                exporter,
                opentelemetry_sdk::runtime::Tokio,
            )
            .build();
            let name = tracing
                .service_name
                .clone()
                .unwrap_or_else(|| service_name.to_owned());
            Some(
                SdkTracerProvider::builder()
                    .with_span_processor(batches)
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                        tracing.sample_ratio,
                    ))))
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name(name)
                            .build(),
                    )
                    .build(),
            )
        }
    };
    let _ = tracing::subscriber::set_global_default(subscriber(
        log,
        std::io::stderr,
        provider.as_ref(),
    ));
    Ok(Telemetry { provider })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log writer that keeps what it is given.
    #[derive(Clone, Default)]
    pub(crate) struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Sink {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The `spans` list of each JSON log line written while `f` runs.
    fn span_lists(
        subscriber: impl Subscriber + Send + Sync + 'static,
        sink: Sink,
        f: impl Fn(),
    ) -> Vec<serde_json::Value> {
        tracing::subscriber::with_default(subscriber, f);
        sink.text()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["spans"].clone())
            .collect()
    }

    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug
    struct Shape {
        name: &'static str,
        sides: u8,
    }

    #[test]
    fn span_fields_are_the_json_that_tracing_subscriber_writes() {
        let log = || {
            let span = tracing::info_span!(
                "call",
                method = "/a.B/C",
                text = "quote \" backslash \\ newline \n tab \t bell \u{7} é 😀",
                shown = %"display \"quoted\"",
                debugged = ?Shape { name: "tri\"angle", sides: 3 },
                r#type = "raw identifier",
                negative = -42i64,
                big = u64::MAX,
                yes = true,
                ratio = 0.1f64,
                whole = 3.0f64,
                huge = 1e300f64,
                nan = f64::NAN,
                later = tracing::field::Empty,
                also_later = tracing::field::Empty,
            );
            span.in_scope(|| tracing::info!("first"));
            span.record("later", 7u64);
            span.record("also_later", "after \"that\"");
            span.in_scope(|| tracing::info!("second"));
            let empty = tracing::info_span!("empty", filled = tracing::field::Empty);
            empty.in_scope(|| tracing::info!("third"));
            empty.record("filled", "now");
            empty.in_scope(|| tracing::info!("fourth"));
        };
        let settings = crate::config::LogSettings {
            format: crate::config::LogFormat::Json,
            filter: "info".into(),
        };
        let ours_sink = Sink::default();
        let writer = ours_sink.clone();
        let ours = span_lists(
            subscriber(&settings, move || writer.clone(), None),
            ours_sink,
            log,
        );
        let reference_sink = Sink::default();
        let writer = reference_sink.clone();
        let reference = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(move || writer.clone()),
        );
        let reference = span_lists(reference, reference_sink, log);
        assert_eq!(ours.len(), 4);
        assert_eq!(ours, reference);
        assert_eq!(ours[1][0]["later"], 7);
        assert_eq!(ours[1][0]["type"], "raw identifier");
        assert_eq!(ours[3][0]["filled"], "now");
    }
}
