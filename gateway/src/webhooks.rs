//! `POST /webhooks/{engine}`: media-engine webhooks (LiveKit today), passed to the service as
//! they came.
//!
//! The gateway does not read or verify them: the service holds the engines' secrets and checks
//! each webhook as its engine signs it. Here the request is only bounded (method, size) and its
//! verdict turned into HTTP: 200 when accepted (applied or not), 401 when it does not verify, 400
//! when it cannot be read, 404 for an engine whose webhooks are not received, 503 when the
//! service cannot be reached (the engine retries).

use std::collections::HashMap;

use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use serde_json::json;
use videochat_proto::v1 as pb;

use crate::upstream::Upstream;

/// The path prefix of engine webhooks; the rest of the path names the engine.
pub const PREFIX: &str = "/webhooks/";
/// Engines send small JSON or form bodies; anything larger is not a webhook of theirs.
const MAX_BODY: usize = 256 * 1024;

pub fn handles(path: &str) -> bool {
    path.starts_with(PREFIX)
}

pub async fn route(request: Request<Incoming>, upstream: &Upstream) -> Response<Full<Bytes>> {
    let engine = request.uri().path()[PREFIX.len()..].to_owned();
    if engine.is_empty() || engine.contains('/') || engine.len() > 32 {
        return reply(StatusCode::NOT_FOUND, json!({ "error": "no such webhook" }));
    }
    if request.method() != http::Method::POST {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "error": "webhooks are POSTed" }),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_BODY) {
        return too_large();
    }
    let url = signed_url(&request);
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return too_large(),
    };
    let webhook = pb::EngineWebhook {
        engine: engine.clone(),
        headers,
        body: body.to_vec(),
        url,
    };
    match upstream.deliver_webhook(webhook).await {
        Ok(accepted) => {
            metrics::counter!("videochat_gateway_webhooks_total", "engine" => engine_label(&engine), "result" => "accepted")
                .increment(1);
            reply(
                StatusCode::OK,
                json!({ "event": accepted.event, "applied": accepted.applied }),
            )
        }
        Err(status) => {
            let (code, result) = match status.code() {
                tonic::Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unverified"),
                tonic::Code::InvalidArgument => (StatusCode::BAD_REQUEST, "malformed"),
                tonic::Code::Unimplemented => (StatusCode::NOT_FOUND, "no_receiver"),
                _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            };
            tracing::info!(engine, code = ?status.code(), message = status.message(), "engine webhook refused");
            metrics::counter!("videochat_gateway_webhooks_total", "engine" => engine_label(&engine), "result" => result)
                .increment(1);
            let message = if code == StatusCode::SERVICE_UNAVAILABLE {
                "handshake service unavailable".to_owned()
            } else {
                status.message().to_owned()
            };
            reply(code, json!({ "error": message }))
        }
    }
}

/// The URL as the engine posted to it (some engines sign it): behind a proxy, as the proxy says.
fn signed_url<B>(request: &Request<B>) -> String {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let scheme = header("x-forwarded-proto").unwrap_or_else(|| "http".to_owned());
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .unwrap_or_default();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    format!("{scheme}://{host}{path}")
}

/// A bounded label: the engines we know, or "other".
fn engine_label(engine: &str) -> &'static str {
    match engine {
        "livekit" => "livekit",
        "twilio" => "twilio",
        "agora" => "agora",
        _ => "other",
    }
}

fn too_large() -> Response<Full<Bytes>> {
    reply(
        StatusCode::PAYLOAD_TOO_LARGE,
        json!({ "error": format!("the body is over {MAX_BODY} bytes") }),
    )
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_url_is_the_one_the_engine_posted_to() {
        let request = Request::builder()
            .uri("/webhooks/twilio?a=1")
            .header("host", "gw.example")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap();
        assert_eq!(
            signed_url(&request),
            "https://gw.example/webhooks/twilio?a=1"
        );
    }
}
