//! Telemetry shared by every piece: the log subscriber, OpenTelemetry tracing, and W3C trace
//! context carried across the gRPC hop and through the outbox.
//!
//! Spans are always built (so every log line and every 1004 message has a trace id, and
//! `traceparent` propagates), but exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, as the
//! OpenTelemetry SDK conventions say; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` are honoured by the SDK itself.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use opentelemetry;
pub use opentelemetry_sdk;
pub use tracing_opentelemetry;

/// Keeps the tracer provider alive; flushes pending spans when dropped.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {error}");
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs logging and tracing for the process. `default_service_name` applies when
/// `OTEL_SERVICE_NAME` is not set.
pub fn init(default_service_name: &str, format: LogFormat, filter: &str) -> TelemetryGuard {
    let mut builder = SdkTracerProvider::builder().with_resource(resource(default_service_name));
    let mut export_error = None;
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(error) => export_error = Some(error.to_string()),
        }
    }
    let provider = builder.build();
    install(provider.clone(), format, filter);
    if let Some(error) = export_error {
        tracing::error!(%error, "OTLP exporter not started; spans are not exported");
    }
    TelemetryGuard { provider }
}

/// Installs the subscriber around a given provider (tests pass one with an in-memory exporter).
pub fn install(provider: SdkTracerProvider, format: LogFormat, filter: &str) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer("videochat");
    opentelemetry::global::set_tracer_provider(provider);
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Only our own spans become OpenTelemetry spans: the libraries below (h2, hyper, sqlx) have
    // spans of their own at trace level that would cost more than they tell.
    let ours = tracing_subscriber::filter::Targets::new()
        .with_target("videochat", tracing::Level::INFO)
        .with_target("videochat_gateway", tracing::Level::INFO)
        .with_target("videochat_handshake", tracing::Level::INFO)
        .with_target("videochat_telemetry", tracing::Level::INFO);
    // Our code reads trace context from the tracing span itself (`OpenTelemetrySpanExt`), never
    // from OpenTelemetry's thread-local "current context"; activating it and timing busy/idle
    // time on every poll of every instrumented future is work on the hot path that nothing reads.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_filter(ours);
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    let _ = Registry::default()
        .with(otel)
        .with(fmt.with_filter(filter))
        .try_init();
}

fn resource(default_service_name: &str) -> Resource {
    let mut builder = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        builder = builder.with_service_name(default_service_name.to_owned());
    }
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The trace id of `span` as 32 hex digits, or a fresh random id when no trace is active
/// (telemetry not installed), so error messages always carry something to search the logs for.
pub fn trace_id(span: &Span) -> String {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

pub fn current_trace_id() -> String {
    trace_id(&Span::current())
}

/// The W3C `traceparent` of `span`; empty when no trace is active.
pub fn traceparent(span: &Span) -> String {
    let mut carrier = Traceparent::default();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0
}

/// A context whose remote parent is `traceparent` (invalid input, or none, gives an empty
/// context).
pub fn context_from_traceparent(traceparent: &str) -> Context {
    if traceparent.is_empty() {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&TraceparentRef(traceparent))
}

/// A carrier of the `traceparent` header alone, which is all the W3C propagator writes for a
/// span without baggage. Why not a `HashMap`: these run for every request and every event
/// delivered (a row's traceparent read back), and a map cost two allocations and a hash each
/// time for one value.
#[derive(Default)]
struct Traceparent(String);

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = value;
        }
    }
}

/// The read side of [`Traceparent`].
struct TraceparentRef<'a>(&'a str);

impl Extractor for TraceparentRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

const TRACEPARENT: &str = "traceparent";

/// Makes `span` a child of the trace in `traceparent`, if it names one.
pub fn set_parent_from_traceparent(span: &Span, traceparent: &str) {
    let context = context_from_traceparent(traceparent);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// Links `span` to the trace in `traceparent` (an event delivered later, caused by a request).
pub fn link_to_traceparent(span: &Span, traceparent: &str) {
    let context = context_from_traceparent(traceparent);
    let linked = context.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// Writes `span`'s trace context into outgoing HTTP/gRPC headers.
pub fn inject(span: &Span, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// Makes `span` a child of the trace context in incoming HTTP/gRPC headers, if any.
pub fn set_parent_from_headers(span: &Span, headers: &http::HeaderMap) {
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_is_read_back_as_the_remote_span_it_names() {
        let context = context_from_traceparent(SAMPLED);
        let span = context.span().span_context().clone();
        assert!(span.is_valid() && span.is_remote() && span.is_sampled());
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn no_traceparent_or_a_malformed_one_names_no_span() {
        for bad in ["", "00-zz-00f067aa0ba902b7-01", "garbage", &SAMPLED[..40]] {
            let context = context_from_traceparent(bad);
            assert!(!context.span().span_context().is_valid(), "{bad:?}");
        }
    }

    #[test]
    fn the_carrier_keeps_what_the_propagator_writes_for_a_span() {
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let mut carrier = Traceparent::default();
        TraceContextPropagator::new()
            .inject_context(&Context::new().with_remote_span_context(span), &mut carrier);
        assert_eq!(carrier.0, SAMPLED);
        let mut nothing = Traceparent::default();
        TraceContextPropagator::new().inject_context(&Context::new(), &mut nothing);
        assert_eq!(nothing.0, "");
    }
}
