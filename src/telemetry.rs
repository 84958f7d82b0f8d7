//! Logging and trace export, set up once by the binary (the library installs no global state).
//!
//! Logs go to stderr (text or JSON, `RUST_LOG` filtering, `info` by default). When an OTLP
//! endpoint is configured (`[telemetry] otlp_endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`),
//! spans are also exported over OTLP/gRPC through [`queue::BoundedExport`], which never blocks
//! the code that ends a span.

mod queue;

use std::io::IsTerminal;
use std::time::Duration;

use healthgate::config::TelemetryConfig;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use prometheus_client::metrics::counter::Counter;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written (to stderr; stdout carries command output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What must be flushed at exit.
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    provider: Option<(SdkTracerProvider, Duration)>,
}

impl Telemetry {
    /// Flushes and stops trace export, waiting at most the export timeout.
    pub(crate) async fn shutdown(self) {
        if let Some((provider, timeout)) = self.provider {
            // The SDK's shutdown blocks; never on a runtime thread.
            let _ =
                tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        }
    }
}

/// Installs logging only (commands that export nothing).
pub(crate) fn init_logs(format: LogFormat) {
    tracing_subscriber::registry()
        .with(fmt_layer(format))
        .init();
}

/// The endpoint as it may be logged: user info and query values redacted (it can come from
/// `OTEL_EXPORTER_OTLP_ENDPOINT` with credentials in it).
fn shown(endpoint: &str) -> String {
    url::Url::parse(endpoint).map_or_else(
        |_| "[unparseable endpoint]".to_owned(),
        |url| healthgate::redact::redact_url(&url),
    )
}

/// Installs logging and, when an endpoint is configured, OTLP trace export. Must run inside
/// the Tokio runtime (the exporter's channel lives on it).
pub(crate) fn init(
    format: LogFormat,
    config: &TelemetryConfig,
    dropped: Counter,
) -> Result<Telemetry, String> {
    let endpoint = config
        .otlp_endpoint
        .clone()
        .or_else(|| env_nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| env_nonempty("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let Some(endpoint) = endpoint else {
        init_logs(format);
        return Ok(Telemetry::default());
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(config.export_timeout)
        // Our queue drops and counts instead; retries would only hold exports longer.
        .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
        .build()
        .map_err(|e| format!("OTLP exporter for {}: {e}", shown(&endpoint)))?;
    let mut resource = Resource::builder();
    if let Some(name) = &config.service_name {
        resource = resource.with_service_name(name.clone());
    } else if env_nonempty("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("healthgate");
    }
    let resource = resource.build();
    opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
    let processor =
        queue::BoundedExport::start(exporter, config.queue_size, config.export_timeout, dropped);
    let mut provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource);
    if let Some(ratio) = config.sample_ratio {
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(ratio),
        )));
    }
    let provider = provider.build();
    let tracer = provider.tracer("healthgate");
    // The exporter's own transport must not feed spans back into the exporter.
    let quiet = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(quiet);
    tracing_subscriber::registry()
        .with(fmt_layer(format))
        .with(otel)
        .init();
    tracing::info!(endpoint = %shown(&endpoint), "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some((provider, config.export_timeout)),
    })
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn fmt_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Log lines carry their own fields; spans exist for trace export. Keeping spans away from
    // this layer spares it formatting every span's fields (a String per probe run and RPC),
    // and without an OpenTelemetry layer no layer wants spans, so none are created at all.
    //
    // Every per-layer filter here states a level hint (EnvFilter's, Targets'; `EventsOnly`
    // defers to them), so tracing knows its max level and the trace and debug events h2 and
    // hyper emit on every frame are rejected by one comparison at their call site. A filter
    // without a hint (`filter_fn`) made every such event walk each layer's filter instead:
    // ~10 % of CPU under load.
    let filter = log_filter().and(EventsOnly);
    match format {
        LogFormat::Text => layer.with_filter(filter).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_filter(filter).boxed(),
    }
}

/// `RUST_LOG`, or `info`.
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Lets events through and keeps spans out, decided once per call site.
#[derive(Debug, Clone, Copy)]
struct EventsOnly;

impl<S> tracing_subscriber::layer::Filter<S> for EventsOnly {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        meta.is_event()
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if meta.is_event() {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
}
