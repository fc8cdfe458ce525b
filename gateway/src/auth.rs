//! Authentication at the WebSocket upgrade: a JWT from `Authorization: Bearer …` or the
//! `access_token` query parameter (browsers cannot set headers on WebSockets).
//!
//! HS256 with a shared secret is the default; RS256/ES256 with a PEM public key or a JWKS file is
//! the production option (the JWKS file is re-read when it changes, so keys rotate without a
//! restart). A token must carry `exp` (unless development relaxes it) and a `sub` that is a
//! valid user id exactly as signed: nothing is trimmed or rewritten, so one user's token can
//! never name another user. Standard OIDC profile claims become the user's just-in-time profile.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;

/// Longest token accepted, in bytes: no real JWT comes near it.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest user id (`sub`) accepted, as in the service.
pub const MAX_SUB_LEN: usize = 128;
/// Largest clock-skew leeway accepted, in seconds.
pub const MAX_LEEWAY_S: u64 = 600;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send Authorization: Bearer <JWT> or ?access_token=<JWT>")]
    Missing,
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("token's sub is not a valid user id: {0}")]
    BadSubject(&'static str),
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
    #[error("VIDEOCHAT_JWT_SECRET is empty: anyone could sign tokens with an empty key")]
    EmptySecret,
}

/// The claims we read. Unknown claims are ignored; `exp`, `nbf`, `iss` and `aud` are checked by
/// `jsonwebtoken` against the [`TokenPolicy`].
#[derive(Debug, Deserialize, Serialize, Default)]
pub struct Claims {
    pub sub: String,
    /// Written by [`sign_dev_token`]; read (and checked, integer or not) by `jsonwebtoken`.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
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

/// What a validly signed token must also satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Required `iss`: a token without `iss`, or with another, is refused.
    pub issuer: Option<String>,
    /// Required `aud`: a token without `aud`, or not naming this one, is refused.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (capped at [`MAX_LEEWAY_S`]).
    pub leeway_s: u64,
    /// Refuse tokens without `exp` (they would never expire).
    pub require_exp: bool,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            leeway_s: 30,
            require_exp: true,
        }
    }
}

impl TokenPolicy {
    pub fn from_config(config: &GatewayConfig) -> Self {
        Self {
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway_s: config.jwt_leeway_s,
            require_exp: !config.jwt_allow_no_exp,
        }
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        // Bounded so that `now - leeway` cannot underflow inside jsonwebtoken.
        validation.leeway = self.leeway_s.min(MAX_LEEWAY_S);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["sub"];
        if self.require_exp {
            required.push("exp");
        }
        // jsonwebtoken checks `iss`/`aud` only when the token has them: a configured value
        // must also make the claim required, or a token without it would pass.
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

/// Whether `sub` can be a user id, exactly as it stands: 1–128 bytes, no control characters,
/// and no whitespace at either end (`" bob "` is nobody, not `bob`). The reason is for the log.
pub fn check_user_id(sub: &str) -> Result<(), &'static str> {
    if sub.is_empty() {
        return Err("empty");
    }
    if sub.len() > MAX_SUB_LEN {
        return Err("longer than 128 bytes");
    }
    if sub.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    if sub.starts_with(char::is_whitespace) || sub.ends_with(char::is_whitespace) {
        return Err("has leading or trailing whitespace");
    }
    Ok(())
}

enum Keys {
    Secret(DecodingKey),
    Public(DecodingKey, Algorithm),
    Jwks(Arc<JwksFile>),
}

/// A JWKS and where it came from; the set is replaced when the file changes.
struct JwksFile {
    path: Option<PathBuf>,
    current: RwLock<Loaded>,
}

struct Loaded {
    stamp: Option<Stamp>,
    set: Arc<JwkSet>,
}

/// What tells a rewritten file from the one last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

impl JwksFile {
    fn set(&self) -> Arc<JwkSet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .set
            .clone()
    }

    /// Re-reads the file if it changed. A file that cannot be read or parsed (say, caught half
    /// written) leaves the keys in use alone and is tried again at the next check.
    fn reload_if_changed(&self) -> Result<bool, AuthConfigError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let stamp = Stamp::of(path).map_err(|source| AuthConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let unchanged = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .stamp
            .as_ref()
            == Some(&stamp);
        if unchanged {
            return Ok(false);
        }
        let set = read_jwks(path)?;
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Loaded {
            stamp: Some(stamp),
            set: Arc::new(set),
        };
        Ok(true)
    }
}

fn read_jwks(path: &Path) -> Result<JwkSet, AuthConfigError> {
    let key_error = |reason: String| AuthConfigError::Key {
        path: path.display().to_string(),
        reason,
    };
    let set: JwkSet = serde_json::from_str(&read(path)?).map_err(|e| key_error(e.to_string()))?;
    if set.keys.is_empty() {
        return Err(key_error("the key set is empty".into()));
    }
    Ok(set)
}

/// Verifies client tokens with the configured key material.
pub struct Authenticator {
    keys: Keys,
    policy: TokenPolicy,
}

impl Authenticator {
    pub fn from_config(config: &GatewayConfig) -> Result<Self, AuthConfigError> {
        let keys = if let Some(path) = &config.jwks_file {
            let stamp = Stamp::of(path).ok();
            let set = read_jwks(path)?;
            Keys::Jwks(Arc::new(JwksFile {
                path: Some(path.clone()),
                current: RwLock::new(Loaded {
                    stamp,
                    set: Arc::new(set),
                }),
            }))
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
        } else if config.jwt_secret.is_empty() {
            return Err(AuthConfigError::EmptySecret);
        } else {
            Keys::Secret(DecodingKey::from_secret(config.jwt_secret.as_bytes()))
        };
        Ok(Self {
            keys,
            policy: TokenPolicy::from_config(config),
        })
    }

    /// HS256 tokens signed with `secret` (tests, fuzzing).
    pub fn with_secret(secret: &[u8], policy: TokenPolicy) -> Self {
        Self {
            keys: Keys::Secret(DecodingKey::from_secret(secret)),
            policy,
        }
    }

    /// RS256/ES256 tokens verified by a fixed key set (tests, fuzzing).
    pub fn with_jwks(set: JwkSet, policy: TokenPolicy) -> Self {
        Self {
            keys: Keys::Jwks(Arc::new(JwksFile {
                path: None,
                current: RwLock::new(Loaded {
                    stamp: None,
                    set: Arc::new(set),
                }),
            })),
            policy,
        }
    }

    /// Checks the JWKS file every `every` and swaps in its keys when it changed, until
    /// `shutdown`. Returns at once when no JWKS file is configured.
    pub fn watch_jwks(
        &self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let file = match &self.keys {
            Keys::Jwks(file) if file.path.is_some() => Some(file.clone()),
            _ => None,
        };
        async move {
            let Some(file) = file else { return };
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match file.reload_if_changed() {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::info!(
                            keys = file.set().keys.len(),
                            "JWKS file changed; keys reloaded"
                        );
                        metrics::counter!("videochat_gateway_jwks_reloads_total", "result" => "ok")
                            .increment(1);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "JWKS file changed but cannot be used; keeping the keys in use");
                        metrics::counter!("videochat_gateway_jwks_reloads_total", "result" => "error")
                            .increment(1);
                    }
                }
            }
        }
    }

    /// Verifies a token and returns who it names.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid("token too long".into()));
        }
        let (key, algorithm) = match &self.keys {
            Keys::Secret(key) => (key.clone(), Algorithm::HS256),
            Keys::Public(key, algorithm) => (key.clone(), *algorithm),
            Keys::Jwks(file) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|e| AuthError::Invalid(e.to_string()))?;
                if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
                    return Err(AuthError::Invalid(format!(
                        "algorithm {:?} not allowed",
                        header.alg
                    )));
                }
                let set = file.set();
                let jwk = match &header.kid {
                    Some(kid) => set.find(kid),
                    None => set.keys.first(),
                }
                .ok_or_else(|| {
                    AuthError::Invalid("no key in the JWKS matches the token's kid".into())
                })?;
                let key =
                    DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Invalid(e.to_string()))?;
                (key, header.alg)
            }
        };
        let validation = self.policy.validation(algorithm);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        if !header_and_claims_are_utf8(token) {
            return Err(AuthError::Invalid("header or claims are not UTF-8".into()));
        }
        let claims = data.claims;
        check_user_id(&claims.sub).map_err(AuthError::BadSubject)?;
        Ok(Principal {
            user_id: claims.sub,
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

/// RFC 7519 §7.2: header and claims must be UTF-8 JSON. serde_json skips the bytes of members
/// nobody reads without checking them, so `jsonwebtoken` accepts a signed token whose unread
/// claims are not UTF-8 (found by the `jwt_claims` fuzz target); this refuses it.
fn header_and_claims_are_utf8(token: &str) -> bool {
    token.split('.').take(2).all(|part| {
        URL_SAFE_NO_PAD
            .decode(part)
            .is_ok_and(|bytes| std::str::from_utf8(&bytes).is_ok())
    })
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
    use serde_json::json;

    fn authenticator(secret: &str) -> Authenticator {
        Authenticator::with_secret(secret.as_bytes(), TokenPolicy::default())
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap()
    }

    fn verdict(policy: TokenPolicy, claims: serde_json::Value) -> Result<String, String> {
        Authenticator::with_secret(b"s3cret", policy)
            .authenticate(&sign(claims))
            .map(|p| p.user_id)
            .map_err(|e| e.to_string())
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
        let expired = sign(json!({ "sub": "alice", "exp": 1_000 }));
        assert!(authenticator("s3cret").authenticate(&expired).is_err());
        assert!(authenticator("s3cret").authenticate("not-a-jwt").is_err());
    }

    #[test]
    fn exp_is_required_unless_development_relaxes_it() {
        let policy = TokenPolicy::default();
        let error = verdict(policy.clone(), json!({ "sub": "alice" })).unwrap_err();
        assert!(error.contains("exp"), "{error}");
        let relaxed = TokenPolicy {
            require_exp: false,
            ..policy.clone()
        };
        assert_eq!(
            verdict(relaxed.clone(), json!({ "sub": "alice" })).unwrap(),
            "alice"
        );
        // Relaxed or not, an `exp` that is there is enforced, and must be a number.
        assert!(verdict(relaxed.clone(), json!({ "sub": "alice", "exp": 1_000 })).is_err());
        assert!(
            verdict(
                policy.clone(),
                json!({ "sub": "alice", "exp": "4000000000" })
            )
            .is_err()
        );
        // A NumericDate may carry a fraction (RFC 7519 §2).
        let fractional = now() as f64 + 60.5;
        assert_eq!(
            verdict(policy, json!({ "sub": "alice", "exp": fractional })).unwrap(),
            "alice"
        );
    }

    #[test]
    fn sub_is_taken_exactly_as_signed_and_must_be_a_user_id() {
        let exp = now() + 60;
        let with_sub = |sub: serde_json::Value| {
            verdict(TokenPolicy::default(), json!({ "sub": sub, "exp": exp }))
        };
        for bad in [
            json!(" bob "),
            json!("bob "),
            json!(" bob"),
            json!("\u{a0}bob"),
            json!("bob\n"),
            json!("b\u{0}ob"),
            json!(""),
            json!(" "),
            json!("x".repeat(129)),
            json!(42),
            json!(null),
        ] {
            assert!(with_sub(bad.clone()).is_err(), "sub {bad} accepted");
        }
        assert!(verdict(TokenPolicy::default(), json!({ "exp": exp })).is_err());
        // Inner spaces and any script are fine; the id is returned byte for byte.
        for good in ["bob", "Bob", "bob smith", "x", "żółw-🐢", &"x".repeat(128)] {
            assert_eq!(with_sub(json!(good)).unwrap(), good);
        }
    }

    #[test]
    fn issuer_and_audience_when_configured_are_required_and_must_match() {
        let policy = TokenPolicy {
            issuer: Some("https://id.example.test".into()),
            audience: Some("videochat".into()),
            ..TokenPolicy::default()
        };
        let exp = now() + 60;
        let good =
            json!({ "sub": "a", "exp": exp, "iss": "https://id.example.test", "aud": "videochat" });
        assert_eq!(verdict(policy.clone(), good.clone()).unwrap(), "a");
        let mut several = good.clone();
        several["aud"] = json!(["other", "videochat"]);
        assert_eq!(verdict(policy.clone(), several).unwrap(), "a");
        for (field, value) in [
            ("iss", json!("https://evil.example.test")),
            ("iss", json!(null)),
            ("aud", json!("other")),
            ("aud", json!(["other"])),
            ("aud", json!(null)),
        ] {
            let mut claims = good.clone();
            match value {
                serde_json::Value::Null => {
                    claims.as_object_mut().unwrap().remove(field);
                }
                value => claims[field] = value,
            }
            assert!(
                verdict(policy.clone(), claims.clone()).is_err(),
                "{claims} accepted"
            );
        }
        // Without configured values, iss and aud are not looked at.
        assert_eq!(verdict(TokenPolicy::default(), good).unwrap(), "a");
    }

    /// Regression: fuzz/artifacts/jwt_claims/crash-6b50bd2f… (an ignored claim with bytes that
    /// are not UTF-8, validly signed) was accepted.
    #[test]
    fn a_signed_token_whose_claims_are_not_utf8_is_refused() {
        let claims = b"{\"sub\":\"alice\",\"axp\":4000000000,\"iws\":\"http:s\xd1\xd0\x96\x9b\xd1\x9a\x87\xa6mple.test\",\"aud\":\"videochat\"}";
        let signed = |header: &[u8], claims: &[u8]| {
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let signature = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &EncodingKey::from_secret(b"s3cret"),
                Algorithm::HS256,
            )
            .unwrap();
            format!("{message}.{signature}")
        };
        let relaxed = Authenticator::with_secret(
            b"s3cret",
            TokenPolicy {
                require_exp: false,
                ..TokenPolicy::default()
            },
        );
        let error = relaxed
            .authenticate(&signed(br#"{"alg":"HS256"}"#, claims))
            .unwrap_err();
        assert!(error.to_string().contains("UTF-8"), "{error}");
        let header = b"{\"alg\":\"HS256\",\"x\":\"\xff\"}";
        assert!(
            relaxed
                .authenticate(&signed(header, br#"{"sub":"alice"}"#))
                .is_err()
        );
        // The same shapes in UTF-8 pass.
        let fine = br#"{"sub":"alice","iws":"http:s\u00e9mple.test","aud":"videochat"}"#;
        assert_eq!(
            relaxed
                .authenticate(&signed(br#"{"alg":"HS256","x":"\u00ff"}"#, fine))
                .unwrap()
                .user_id,
            "alice"
        );
    }

    #[test]
    fn leeway_tolerates_that_much_clock_skew_and_no_more() {
        let just_expired = json!({ "sub": "a", "exp": now() - 10 });
        let not_yet = json!({ "sub": "a", "exp": now() + 600, "nbf": now() + 10 });
        let leeway = |leeway_s| TokenPolicy {
            leeway_s,
            ..TokenPolicy::default()
        };
        assert!(verdict(leeway(30), just_expired.clone()).is_ok());
        assert!(verdict(leeway(30), not_yet.clone()).is_ok());
        assert!(verdict(leeway(0), just_expired.clone()).is_err());
        assert!(verdict(leeway(0), not_yet.clone()).is_err());
        assert!(verdict(leeway(5), just_expired).is_err());
        // An absurd leeway is capped rather than overflowing.
        assert!(verdict(leeway(u64::MAX), json!({ "sub": "a", "exp": 1 })).is_err());
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
