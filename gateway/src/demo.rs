//! The browser demo: a page at `/` where anyone can sign in as anyone, ring other people and see
//! every frame go by. It exists only while the gateway verifies tokens with the public
//! development secret ([`GatewayConfig::uses_dev_secret`]): with a real secret or key, none of
//! these paths is served (404), because `/demo/token` hands out tokens to whoever asks.
//!
//! Paths: `/` (the page), `/demo/app.js`, `/demo/style.css` (embedded with `include_str!`, no
//! build step), `POST /demo/token` (a development token with the given profile claims) and
//! `GET /demo/online` (the user ids that have a socket on *this* gateway — a demo aid, not the
//! service's presence, which spans every gateway).

use std::collections::BTreeMap;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{DevProfile, sign_dev_token_with_profile};
use crate::config::GatewayConfig;
use crate::envelope::MAX_ID_LEN;
use crate::registry::Registry;

const INDEX_HTML: &str = include_str!("../demo/index.html");
const APP_JS: &str = include_str!("../demo/app.js");
const STYLE_CSS: &str = include_str!("../demo/style.css");

/// What the demo's endpoints say about themselves, in every answer.
pub const WARNING: &str = "development mode: anyone can sign in as anyone";
/// Why that is acceptable.
const NOTE: &str = "This page and its endpoints exist only while the server uses the public \
    development JWT secret; with a real secret or key they are not served.";

/// Lifetime of a demo token: a working day.
const TOKEN_TTL_S: u64 = 12 * 3600;
/// Largest `/demo/token` body read.
const MAX_BODY: usize = 8 * 1024;
/// Longest profile field, as the handshake service stores it (longer ones would make the
/// socket's registration fail).
const MAX_PROFILE_FIELD: usize = 1024;

/// The page's own rules: its scripts and styles only, images from anywhere (avatars are URLs).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src * data: blob:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// Whether `path` belongs to the demo (served only with the development secret).
pub fn handles(path: &str) -> bool {
    path == "/" || path == "/index.html" || path.starts_with("/demo/")
}

/// Serves one demo request. The caller has checked that the development secret is in use.
pub async fn route(
    request: Request<Incoming>,
    config: &GatewayConfig,
    registry: &Registry,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    match (request.uri().path(), method) {
        ("/" | "/index.html", Method::GET) => file(INDEX_HTML, "text/html; charset=utf-8"),
        ("/demo/app.js", Method::GET) => file(APP_JS, "text/javascript; charset=utf-8"),
        ("/demo/style.css", Method::GET) => file(STYLE_CSS, "text/css; charset=utf-8"),
        ("/demo/online", Method::GET) => online(registry),
        ("/demo/token", Method::POST) => token(request, config).await,
        ("/" | "/index.html" | "/demo/app.js" | "/demo/style.css" | "/demo/online", _) => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n")
        }
        ("/demo/token", _) => plain(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Body of `POST /demo/token`. A field left out leaves that claim out of the token.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequest {
    user_id: String,
    first_name: Option<String>,
    last_name: Option<String>,
    avatar: Option<String>,
}

impl TokenRequest {
    /// The user id and profile claims, or what is wrong with them (told to the client: this
    /// is the client's own input).
    fn into_profile(self) -> Result<(String, DevProfile), String> {
        let user_id = self.user_id.trim().to_owned();
        if user_id.is_empty() || user_id.len() > MAX_ID_LEN {
            return Err(format!("userId must be 1 to {MAX_ID_LEN} bytes"));
        }
        if user_id.chars().any(char::is_control) {
            return Err("userId must not contain control characters".into());
        }
        let field = |name: &str, value: Option<String>| match value {
            Some(v) if v.len() > MAX_PROFILE_FIELD => {
                Err(format!("{name} must be at most {MAX_PROFILE_FIELD} bytes"))
            }
            other => Ok(other.map(|v| v.trim().to_owned())),
        };
        let profile = DevProfile {
            given_name: field("firstName", self.first_name)?,
            family_name: field("lastName", self.last_name)?,
            picture: field("avatar", self.avatar)?,
        };
        Ok((user_id, profile))
    }
}

async fn token(request: Request<Incoming>, config: &GatewayConfig) -> Response<Full<Bytes>> {
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return problem(StatusCode::PAYLOAD_TOO_LARGE, "body too large or cut short"),
    };
    let parsed = serde_json::from_slice::<TokenRequest>(&body)
        .map_err(|e| {
            format!("expected {{\"userId\", \"firstName\", \"lastName\", \"avatar\"}}: {e}")
        })
        .and_then(TokenRequest::into_profile);
    let (user_id, profile) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return problem(StatusCode::BAD_REQUEST, &message),
    };
    match sign_dev_token_with_profile(&config.jwt_secret, &user_id, &profile, TOKEN_TTL_S) {
        Ok(token) => {
            tracing::info!(user = %user_id, "demo token issued (development secret)");
            json_response(
                StatusCode::OK,
                json!({
                    "token": token,
                    "userId": user_id,
                    "expiresAt": (unix_s() + TOKEN_TTL_S) * 1000,
                    "developmentMode": true,
                    "warning": WARNING,
                    "note": NOTE,
                }),
            )
        }
        Err(error) => {
            tracing::error!(%error, "cannot sign a demo token");
            problem(StatusCode::INTERNAL_SERVER_ERROR, "cannot sign a token")
        }
    }
}

fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// User ids with at least one socket on this gateway, with how many.
fn online(registry: &Registry) -> Response<Full<Bytes>> {
    let mut users: BTreeMap<String, usize> = BTreeMap::new();
    for (_connection, user, _delivered) in registry.snapshot() {
        *users.entry(user).or_default() += 1;
    }
    let users: Vec<_> = users
        .into_iter()
        .map(|(user_id, sockets)| json!({ "userId": user_id, "sockets": sockets }))
        .collect();
    json_response(
        StatusCode::OK,
        json!({
            "users": users,
            "scope": "sockets on this gateway only",
            "warning": WARNING,
        }),
    )
}

fn file(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    no_cache(response)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    no_cache(response)
}

fn problem(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({ "error": message, "warning": WARNING }))
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn no_cache(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(user_id: &str) -> TokenRequest {
        TokenRequest {
            user_id: user_id.into(),
            first_name: Some(" Alice ".into()),
            last_name: None,
            avatar: Some("https://example.com/a.png".into()),
        }
    }

    #[test]
    fn a_token_request_becomes_a_trimmed_profile() {
        let (user, profile) = request(" alice ").into_profile().unwrap();
        assert_eq!(user, "alice");
        assert_eq!(profile.given_name.as_deref(), Some("Alice"));
        assert_eq!(profile.family_name, None);
        assert_eq!(
            profile.picture.as_deref(),
            Some("https://example.com/a.png")
        );
    }

    #[test]
    fn bad_user_ids_and_oversized_fields_are_refused() {
        assert!(request("").into_profile().is_err());
        assert!(request(&"x".repeat(129)).into_profile().is_err());
        assert!(request("a\u{7}b").into_profile().is_err());
        let mut long = request("alice");
        long.avatar = Some("x".repeat(MAX_PROFILE_FIELD + 1));
        assert!(long.into_profile().unwrap_err().contains("avatar"));
    }

    #[test]
    fn only_demo_paths_are_claimed() {
        assert!(handles("/"));
        assert!(handles("/demo/token"));
        assert!(!handles("/ws"));
        assert!(!handles("/metrics"));
    }
}
