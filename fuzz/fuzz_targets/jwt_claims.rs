//! What a *validly signed* token may carry: the claims JSON is arbitrary bytes, signed here
//! with the secret so that the fuzzer reaches claim parsing and validation. The oracle: a token
//! authenticates only if its `sub` is a valid user id and is returned byte for byte (never
//! trimmed or rewritten), `exp` is present when required, and `iss`/`aud` match when configured.
//! The first input byte picks the policy.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use videochat_gateway::auth::{Authenticator, TokenPolicy, check_user_id};

const SECRET: &[u8] = b"fuzz-secret";
const ISSUER: &str = "https://id.example.test";
const AUDIENCE: &str = "videochat";

/// The claims the oracle looks at, kept as raw JSON and read only when the policy checks them,
/// as the gateway does: a claim nobody reads may hold JSON that `Value` cannot represent
/// (`1e3005`), which is still JSON (RFC 8259 sets no range) and no reason to refuse a token.
#[derive(Deserialize)]
struct Checked<'a> {
    #[serde(borrow)]
    sub: Option<&'a RawValue>,
    #[serde(borrow)]
    exp: Option<&'a RawValue>,
    #[serde(borrow)]
    iss: Option<&'a RawValue>,
    #[serde(borrow)]
    aud: Option<&'a RawValue>,
}

/// A claim as a `Value`; `Null` when absent or not representable.
fn read(raw: Option<&RawValue>) -> Value {
    raw.and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or(Value::Null)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, claims)) = data.split_first() else {
        return;
    };
    let policy = TokenPolicy {
        issuer: (flags & 1 != 0).then(|| ISSUER.to_owned()),
        audience: (flags & 2 != 0).then(|| AUDIENCE.to_owned()),
        leeway_s: if flags & 4 != 0 { 0 } else { u64::MAX },
        require_exp: flags & 8 == 0,
    };
    let header = if flags & 16 != 0 {
        r#"{"alg":"HS256","typ":"JWT"}"#
    } else {
        r#"{"alg":"HS256"}"#
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .expect("HS256 signs anything");
    let token = format!("{message}.{signature}");

    let Ok(principal) = Authenticator::with_secret(SECRET, policy.clone()).authenticate(&token)
    else {
        return;
    };
    let claims: Checked = serde_json::from_slice(claims).expect("accepted claims are JSON");
    let sub = read(claims.sub);
    assert_eq!(
        sub.as_str(),
        Some(principal.user_id.as_str()),
        "sub not returned as signed"
    );
    assert!(check_user_id(&principal.user_id).is_ok());
    if policy.require_exp {
        assert!(read(claims.exp).is_number(), "accepted without exp");
    }
    if policy.issuer.is_some() {
        let iss = read(claims.iss);
        assert_eq!(iss, ISSUER, "accepted with iss {iss}");
    }
    if policy.audience.is_some() {
        let aud = &read(claims.aud);
        let names_us = aud == AUDIENCE
            || aud
                .as_array()
                .is_some_and(|all| all.iter().any(|a| a == AUDIENCE));
        assert!(names_us, "accepted with aud {aud}");
    }
});
