//! Logs and traces of the `oubli` process: logs on stderr, as text or as JSON lines
//! (`OUBLI_LOG_FORMAT=json`), filtered by `OUBLI_LOG` (default `warn`); and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, the
//! spans of oubli's work (HTTP requests, request steps, tasks, plugin calls) exported
//! over OTLP/HTTP in JSON, from `info` up (`OUBLI_TRACE` to choose).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{FilterExt as _, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// What must be flushed when the process ends.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered; call once, outside the async runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: sending the last traces failed: {e}");
        }
    }
}

/// Installs the global subscriber. Call it before the async runtime starts. With
/// `count_statements`, the statements sent through sqlx are counted for the benchmarks
/// ([`crate::bench::statements`]).
pub fn init(count_statements: bool) -> Telemetry {
    let filter = || EnvFilter::try_from_env("OUBLI_LOG").unwrap_or_else(|_| "warn".into());
    let logs = if std::env::var("OUBLI_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|e| !e.is_empty()));
    let traces = configured
        .then(tracer_provider)
        .and_then(|built| match built {
            Ok(provider) => Some(provider),
            Err(e) => {
                eprintln!("warning: traces are not exported: {e}");
                None
            }
        });
    let spans = traces.as_ref().map(|provider| {
        let filter = EnvFilter::try_from_env("OUBLI_TRACE").unwrap_or_else(|_| "oubli=info".into());
        // Spans only: an event (a log line) may quote what a plugin or a remote system said,
        // or a client's address; spans carry ids.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("oubli"))
            .with_filter(filter.and(filter_fn(|m| m.is_span())))
    });
    let statements = count_statements.then(crate::bench::statements::layer);
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .with(statements)
        .init();
    Telemetry { traces }
}

fn tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    // The endpoint, headers and timeout come from the standard OTEL_EXPORTER_OTLP_*
    // variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("oubli")
                .build(),
        )
        .build())
}
