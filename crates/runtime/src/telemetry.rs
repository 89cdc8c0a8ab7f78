//! Tracing setup: JSON in production, readable text on a terminal, and,
//! when `tracing.otlp_endpoint` is set, every span exported over OTLP/gRPC
//! to a collector (linked across services by W3C trace context, see
//! [`crate::trace`]).

use std::io::IsTerminal;

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
