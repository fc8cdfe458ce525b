//! The production authentication options: RS256 and ES256 with a PEM public key, RS256 with a
//! JWKS file (key chosen by `kid`), and issuer/audience checks.

mod common;

use std::path::PathBuf;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn sign(
    algorithm: Algorithm,
    key: &EncodingKey,
    kid: Option<&str>,
    claims: serde_json::Value,
) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn claims(sub: &str) -> serde_json::Value {
    json!({ "sub": sub, "exp": 4_000_000_000u64, "given_name": "Key", "iss": "https://id.example.test", "aud": "videochat" })
}

async fn upgrade_status(app: &TestApp, token: &str) -> u16 {
    let request = format!("{}?access_token={token}", app.ws_url())
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_with_a_public_key_file() {
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.jwt_public_key_file = Some(fixture("rsa_public.pem"));
        gateway.jwt_issuer = Some("https://id.example.test".into());
        gateway.jwt_audience = Some("videochat".into());
    })
    .await;
    let good = sign(Algorithm::RS256, &rsa_key(), None, claims("alice"));
    assert_eq!(upgrade_status(&app, &good).await, 101);
    // The HS256 secret no longer opens the door.
    assert_eq!(upgrade_status(&app, &TestApp::token("alice")).await, 401);
    // Wrong issuer, wrong audience.
    let mut other = claims("alice");
    other["iss"] = json!("https://evil.example.test");
    assert_eq!(
        upgrade_status(&app, &sign(Algorithm::RS256, &rsa_key(), None, other)).await,
        401
    );
    let mut other = claims("alice");
    other["aud"] = json!("somebody-else");
    assert_eq!(
        upgrade_status(&app, &sign(Algorithm::RS256, &rsa_key(), None, other)).await,
        401
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_with_a_public_key_file() {
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.jwt_public_key_file = Some(fixture("ec_public.pem"));
    })
    .await;
    let key = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap();
    assert_eq!(
        upgrade_status(&app, &sign(Algorithm::ES256, &key, None, claims("bob"))).await,
        101
    );
    // An RS256 token is not accepted by an EC key.
    assert_eq!(
        upgrade_status(
            &app,
            &sign(Algorithm::RS256, &rsa_key(), None, claims("bob"))
        )
        .await,
        401
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_with_a_jwks_file() {
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.jwks_file = Some(fixture("jwks.json"));
    })
    .await;
    let good = sign(
        Algorithm::RS256,
        &rsa_key(),
        Some("test-rsa-1"),
        claims("carol"),
    );
    let mut carol = Client::connect(&app.ws_url(), "carol", &good).await;
    // The profile claims of that token applied.
    let mut dave = Client::connect(
        &app.ws_url(),
        "dave",
        &sign(
            Algorithm::RS256,
            &rsa_key(),
            Some("test-rsa-1"),
            claims("dave"),
        ),
    )
    .await;
    ok(&carol
        .request(
            "videochat:requestDirectVideochat",
            json!({ "targetUser": "dave" }),
        )
        .await);
    assert_eq!(
        dave.event(REQUESTED).await["data"]["user"]["firstName"],
        "Key"
    );
    // Unknown kid, and an HS256 token, are refused.
    let unknown = sign(Algorithm::RS256, &rsa_key(), Some("other"), claims("carol"));
    assert_eq!(upgrade_status(&app, &unknown).await, 401);
    assert_eq!(upgrade_status(&app, &TestApp::token("carol")).await, 401);
    app.stop().await;
}

#[test]
fn unreadable_key_files_fail_at_start_up_naming_the_file() {
    let (mut gateway, _) = configs();
    gateway.jwt_public_key_file = Some(fixture("missing.pem"));
    let error = videochat_gateway::auth::Authenticator::from_config(&gateway)
        .err()
        .unwrap();
    assert!(error.to_string().contains("missing.pem"), "{error}");
    gateway.jwt_public_key_file = Some(fixture("README.md"));
    let error = videochat_gateway::auth::Authenticator::from_config(&gateway)
        .err()
        .unwrap();
    assert!(error.to_string().contains("README.md"), "{error}");
}
