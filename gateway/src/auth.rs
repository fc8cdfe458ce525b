//! Authentication at the WebSocket upgrade: a JWT from `Authorization: Bearer …` or the
//! `access_token` query parameter (browsers cannot set headers on WebSockets).
//!
//! HS256 with a shared secret is the default; RS256/ES256 with a PEM public key or a JWKS file is
//! the production option. The token's `sub` is the user id; standard OIDC profile claims become
//! the user's just-in-time profile.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::GatewayConfig;

/// Longest token accepted, in bytes: no real JWT comes near it.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest user id (`sub`) accepted, as in the service.
const MAX_SUB_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send Authorization: Bearer <JWT> or ?access_token=<JWT>")]
    Missing,
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("token has no usable sub claim")]
    BadSubject,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no usable key: {reason}")]
    Key { path: String, reason: String },
}

/// The claims we read. Unknown claims are ignored.
#[derive(Debug, Deserialize, Serialize, Default)]
pub struct Claims {
    pub sub: String,
    /// Checked when present; a token without `exp` never expires (the issuer's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_mode: Option<i32>,
}

/// A user authenticated at the upgrade.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub profile: videochat_proto::v1::UserPatch,
}

enum Keys {
    Secret(DecodingKey),
    Public(DecodingKey, Algorithm),
    Jwks(JwkSet),
}

/// Verifies client tokens with the configured key material.
pub struct Authenticator {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Authenticator {
    pub fn from_config(config: &GatewayConfig) -> Result<Self, AuthConfigError> {
        let keys = if let Some(path) = &config.jwks_file {
            let text = read(path)?;
            let set: JwkSet = serde_json::from_str(&text).map_err(|e| AuthConfigError::Key {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            Keys::Jwks(set)
        } else if let Some(path) = &config.jwt_public_key_file {
            let pem = read(path)?;
            let key_error = |reason: String| AuthConfigError::Key {
                path: path.display().to_string(),
                reason,
            };
            if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                Keys::Public(key, Algorithm::RS256)
            } else {
                let key = DecodingKey::from_ec_pem(pem.as_bytes())
                    .map_err(|e| key_error(format!("neither an RSA nor an EC public key: {e}")))?;
                Keys::Public(key, Algorithm::ES256)
            }
        } else {
            Keys::Secret(DecodingKey::from_secret(config.jwt_secret.as_bytes()))
        };
        Ok(Self {
            keys,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        })
    }

    /// Verifies a token and returns who it names.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid("token too long".into()));
        }
        let (key, algorithm) = match &self.keys {
            Keys::Secret(key) => (key.clone(), Algorithm::HS256),
            Keys::Public(key, algorithm) => (key.clone(), *algorithm),
            Keys::Jwks(set) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|e| AuthError::Invalid(e.to_string()))?;
                let jwk = match &header.kid {
                    Some(kid) => set.find(kid),
                    None => set.keys.first(),
                }
                .ok_or_else(|| {
                    AuthError::Invalid("no key in the JWKS matches the token's kid".into())
                })?;
                let key =
                    DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Invalid(e.to_string()))?;
                if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err(AuthError::Invalid(format!(
                        "algorithm {:?} not allowed",
                        header.alg
                    )));
                }
                (key, header.alg)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["sub"]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let sub = claims.sub.trim();
        if sub.is_empty() || sub.len() > MAX_SUB_LEN || sub.chars().any(char::is_control) {
            return Err(AuthError::BadSubject);
        }
        Ok(Principal {
            user_id: sub.to_owned(),
            profile: videochat_proto::v1::UserPatch {
                first_name: claims.given_name,
                last_name: claims.family_name,
                privacy_mode: claims.privacy_mode,
                avatar: claims.picture,
                company_name: claims.company_name,
                company_title: claims.company_title,
            },
        })
    }
}

fn read(path: &Path) -> Result<String, AuthConfigError> {
    std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Finds the token of an upgrade request: the `Authorization` header first, then the
/// `access_token` query parameter.
pub fn token_from_request<B>(request: &http::Request<B>) -> Option<String> {
    if let Some(value) = request.headers().get(http::header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
    {
        return Some(token.trim().to_owned());
    }
    request.uri().query().and_then(|query| {
        query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == "access_token").then(|| percent_decode(value))
        })
    })
}

/// Tokens are base64url and dots, which need no decoding; `%XX` is decoded for clients that
/// escape anyway.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Signs an HS256 development token (`videochat token`, tests); `name` is "First Last".
pub fn sign_dev_token(
    secret: &str,
    user_id: &str,
    name: Option<&str>,
    ttl_s: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let (given_name, family_name) = match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => match name.split_once(' ') {
            Some((first, last)) => (Some(first.to_owned()), Some(last.trim().to_owned())),
            None => (Some(name.to_owned()), None),
        },
        None => (None, None),
    };
    let profile = DevProfile {
        given_name,
        family_name,
        picture: None,
    };
    sign_dev_token_with_profile(secret, user_id, &profile, ttl_s)
}

/// The profile claims a development token may carry (the browser demo lets people edit them).
/// `None` leaves the claim out, so the stored value stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevProfile {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub picture: Option<String>,
}

/// Signs an HS256 development token carrying `profile` as OIDC claims.
pub fn sign_dev_token_with_profile(
    secret: &str,
    user_id: &str,
    profile: &DevProfile,
    ttl_s: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let claims = Claims {
        sub: user_id.to_owned(),
        exp: Some(now + ttl_s),
        given_name: profile.given_name.clone(),
        family_name: profile.family_name.clone(),
        picture: profile.picture.clone(),
        ..Claims::default()
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(secret: &str) -> Authenticator {
        Authenticator {
            keys: Keys::Secret(DecodingKey::from_secret(secret.as_bytes())),
            issuer: None,
            audience: None,
        }
    }

    #[test]
    fn a_dev_token_round_trips_with_its_profile() {
        let token = sign_dev_token("s3cret", "alice", Some("Alice Liddell"), 60).unwrap();
        let principal = authenticator("s3cret").authenticate(&token).unwrap();
        assert_eq!(principal.user_id, "alice");
        assert_eq!(principal.profile.first_name.as_deref(), Some("Alice"));
        assert_eq!(principal.profile.last_name.as_deref(), Some("Liddell"));
    }

    #[test]
    fn a_dev_token_carries_the_picture_and_leaves_absent_claims_out() {
        let profile = DevProfile {
            given_name: Some("Bob".into()),
            family_name: None,
            picture: Some("https://example.com/bob.png".into()),
        };
        let token = sign_dev_token_with_profile("s3cret", "bob", &profile, 60).unwrap();
        let principal = authenticator("s3cret").authenticate(&token).unwrap();
        assert_eq!(principal.profile.first_name.as_deref(), Some("Bob"));
        assert_eq!(principal.profile.last_name, None);
        assert_eq!(
            principal.profile.avatar.as_deref(),
            Some("https://example.com/bob.png")
        );
    }

    #[test]
    fn forged_expired_and_garbage_tokens_are_refused() {
        let forged = sign_dev_token("other", "alice", None, 60).unwrap();
        assert!(authenticator("s3cret").authenticate(&forged).is_err());
        let claims = Claims {
            sub: "alice".into(),
            exp: Some(1_000),
            ..Claims::default()
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(authenticator("s3cret").authenticate(&expired).is_err());
        assert!(authenticator("s3cret").authenticate("not-a-jwt").is_err());
    }

    #[test]
    fn a_token_without_exp_is_accepted_but_one_without_sub_is_not() {
        let encode = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"s3cret"),
            )
            .unwrap()
        };
        let no_exp = encode(serde_json::json!({ "sub": "alice" }));
        assert_eq!(
            authenticator("s3cret")
                .authenticate(&no_exp)
                .unwrap()
                .user_id,
            "alice"
        );
        let no_sub = encode(serde_json::json!({ "exp": 4_000_000_000u64 }));
        assert!(authenticator("s3cret").authenticate(&no_sub).is_err());
        let empty_sub = encode(serde_json::json!({ "sub": " " }));
        assert!(authenticator("s3cret").authenticate(&empty_sub).is_err());
    }

    #[test]
    fn token_is_found_in_header_or_query() {
        let request = http::Request::builder()
            .uri("/ws")
            .header("Authorization", "Bearer abc.def.ghi")
            .body(())
            .unwrap();
        assert_eq!(token_from_request(&request).as_deref(), Some("abc.def.ghi"));
        let request = http::Request::builder()
            .uri("/ws?x=1&access_token=abc.d%2Eef")
            .body(())
            .unwrap();
        assert_eq!(token_from_request(&request).as_deref(), Some("abc.d.ef"));
        let request = http::Request::builder().uri("/ws").body(()).unwrap();
        assert_eq!(token_from_request(&request), None);
    }
}
