//! Logs and traces.
//!
//! Logs go to stderr, readable by default or JSON (`--log-format json`), filtered by `RUST_LOG`;
//! lines inside an RPC carry its `trace_id`. Traces are exported over OTLP/gRPC when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, configured by
//! the standard `OTEL_*` variables (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, ...), and are
//! flushed by [`Telemetry::shutdown`]. W3C trace context is always read from incoming calls.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// The service name traces carry unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "grpc-chat";

/// Set once trace export is installed: spans then have OpenTelemetry contexts worth reading.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (and so carry trace contexts). Lets hot paths skip the lookup.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps trace export running; call [`Telemetry::shutdown`] to flush it.
#[must_use = "dropping it without shutdown loses the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs logging (and trace export when configured). Must run inside the Tokio runtime,
/// which the OTLP exporter uses.
pub fn init(default_filter: &str, format: LogFormat) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = otlp_configured().then(tracer_provider).transpose()?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let traces = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(SERVICE_NAME)));
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()?;
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Exports the spans still buffered and stops trace export.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // Shutdown blocks until the exporter is done; keep it off the async workers.
            let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = flushed {
                eprintln!("warning: flushing traces failed: {error}");
            }
        }
    }
}

/// TLS for an `https://` collector, as the OpenTelemetry environment variables say: the CA in
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` (else the system's roots), and a client certificate in
/// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` / `_CLIENT_KEY`. The same rustls (ring) as everywhere.
fn otlp_tls() -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    use anyhow::Context;
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |name: &str| -> anyhow::Result<Option<Vec<u8>>> {
        match std::env::var_os(name).filter(|value| !value.is_empty()) {
            None => Ok(None),
            Some(path) => std::fs::read(&path)
                .map(Some)
                .with_context(|| format!("{name}: cannot read {}", path.to_string_lossy())),
        }
    };
    let mut tls = ClientTlsConfig::new();
    tls = match read("OTEL_EXPORTER_OTLP_CERTIFICATE")? {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
        None => tls.with_enabled_roots(),
    };
    if let (Some(cert), Some(key)) = (
        read("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")?,
        read("OTEL_EXPORTER_OTLP_CLIENT_KEY")?,
    ) {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(tls)
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.trim().is_empty())
}

/// Whether the environment asks for OTLP trace export.
fn otlp_configured() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithTonicConfig;
    let https = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    })
    .is_some_and(|endpoint| endpoint.trim().starts_with("https://"));
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if https {
        exporter = exporter.with_tls_config(otlp_tls()?);
    }
    let exporter = exporter.build()?;
    let mut resource = Resource::builder();
    if !env_set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
