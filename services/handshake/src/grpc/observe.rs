//! A tower layer around every RPC: the server span (OpenTelemetry RPC semantic conventions,
//! parent taken from the caller's `traceparent`) and the latency histogram.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};
use tracing::Instrument;

#[derive(Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .map(|(s, m)| (s.to_owned(), m.to_owned()))
            .unwrap_or_else(|| (path.clone(), String::new()));
        let name = path.trim_start_matches('/').to_owned();
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        videochat_telemetry::set_parent_from_headers(&span, request.headers());
        span.record("trace_id", videochat_telemetry::trace_id(&span));
        let started = Instant::now();
        let future = self.inner.call(request);
        let record_span = span.clone();
        Box::pin(
            async move {
                let result = future.await;
                // Errors are trailers-only responses: the status is in the headers. A success's
                // status comes in trailers, which are not seen here: OK.
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0),
                    Err(_) => 2,
                };
                record_span.record("rpc.grpc.status_code", code);
                metrics::histogram!(
                    "videochat_grpc_server_seconds",
                    "method" => method,
                    "code" => code.to_string()
                )
                .record(started.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}
