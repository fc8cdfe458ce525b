//! Any string a client puts in `Authorization: Bearer` or `?access_token=` reaches
//! `token_from_request` and `Authenticator::authenticate` before anything else. Whatever it is,
//! neither may panic, and nothing unsigned may authenticate. Both key setups are exercised:
//! the HS256 secret, and a JWKS (whose path parses the token's header before any signature).

#![no_main]

use std::sync::OnceLock;

use jsonwebtoken::jwk::JwkSet;
use libfuzzer_sys::fuzz_target;
use videochat_gateway::auth::{self, Authenticator, TokenPolicy};

const JWKS: &str = include_str!("../../services/videochat/tests/fixtures/jwks.json");

fn authenticators() -> &'static [Authenticator; 2] {
    static AUTH: OnceLock<[Authenticator; 2]> = OnceLock::new();
    AUTH.get_or_init(|| {
        let set: JwkSet = serde_json::from_str(JWKS).expect("fixture JWKS");
        [
            Authenticator::with_secret(b"fuzz-secret", TokenPolicy::default()),
            Authenticator::with_jwks(set, TokenPolicy::default()),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for authenticator in authenticators() {
        // Nobody can sign with the fuzz secret or the fixture's private key by mutation.
        assert!(
            authenticator.authenticate(text).is_err(),
            "{text:?} authenticated"
        );
    }
    // The same string as it arrives: in the query (percent-decoded) and in the header.
    if let Ok(request) = http::Request::builder()
        .uri(format!("/ws?access_token={text}"))
        .body(())
    {
        let _ = auth::token_from_request(&request);
    }
    if let Ok(request) = http::Request::builder()
        .uri("/ws")
        .header("Authorization", format!("Bearer {text}"))
        .body(())
    {
        let _ = auth::token_from_request(&request);
    }
});
