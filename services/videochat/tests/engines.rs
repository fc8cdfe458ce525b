//! One full handshake per engine through the gateway: the credentials each side receives are the
//! chosen engine's, and the engine can also be chosen per request by an internal caller.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use videochat_handshake::engine::EngineKind;
use videochat_handshake::engine::agora::parse;
use videochat_proto::v1 as pb;

const AGORA_APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
const AGORA_CERTIFICATE: &str = "5CFd2fd1755d40ecb72977518be15d3b";
const TWILIO_SECRET: &str = "twilio-api-key-secret-0123456789abcdef";

fn with_all_engines(handshake: &mut videochat_handshake::HandshakeConfig, default: EngineKind) {
    handshake.engines.engine = default;
    handshake.engines.agora_app_id = Some(AGORA_APP_ID.into());
    handshake.engines.agora_app_certificate = Some(AGORA_CERTIFICATE.into());
    handshake.engines.twilio_account_sid = Some("AC11111111111111111111111111111111".into());
    handshake.engines.twilio_api_key_sid = Some("SK22222222222222222222222222222222".into());
    handshake.engines.twilio_api_key_secret = Some(TWILIO_SECRET.into());
}

/// alice calls bob, bob accepts: (bob's credentials, alice's credentials).
async fn handshake(app: &TestApp) -> (Value, Value) {
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let ring = ring(&mut alice, &mut bob).await;
    accept(&mut alice, &mut bob, &ring).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_handshake_hands_out_rtc_tokens_for_the_room_and_uid() {
    let app = TestApp::spawn_with(Backend::Sqlite, |_, h| {
        with_all_engines(h, EngineKind::Agora)
    })
    .await;
    let (bob, alice) = handshake(&app).await;
    for (creds, identity) in [(&bob, "bob"), (&alice, "alice")] {
        assert_eq!(creds["videochatEngine"], "agora");
        assert_eq!(creds["videochatAppId"], AGORA_APP_ID);
        assert_eq!(creds["videochatUrl"], "");
        assert_eq!(
            creds["sharedSecret"], "",
            "the E2EE passphrase is LiveKit's"
        );
        assert_eq!(creds["identity"], identity);
        let token = parse::parse(creds["token"].as_str().unwrap()).expect("an AccessToken2");
        assert_eq!(token.app_id, AGORA_APP_ID);
        assert_eq!(token.channel, creds["room"].as_str().unwrap());
        assert_eq!(token.uid, creds["uid"].to_string());
        assert_eq!(token.expire, 6 * 3600);
        assert_eq!(token.privileges.len(), 4, "both may publish");
    }
    assert_ne!(bob["uid"], alice["uid"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_handshake_hands_out_video_access_tokens() {
    let app = TestApp::spawn_with(Backend::Sqlite, |_, h| {
        with_all_engines(h, EngineKind::Twilio)
    })
    .await;
    let (bob, alice) = handshake(&app).await;
    for (creds, identity) in [(&bob, "bob"), (&alice, "alice")] {
        assert_eq!(creds["videochatEngine"], "twilio");
        assert_eq!(creds["videochatAppId"], "");
        let token = creds["token"].as_str().unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.cty.as_deref(), Some("twilio-fpa;v=1"));
        let claims: Value = jsonwebtoken::decode(
            token,
            &DecodingKey::from_secret(TWILIO_SECRET.as_bytes()),
            &Validation::new(Algorithm::HS256),
        )
        .expect("signed with the API key secret")
        .claims;
        assert_eq!(claims["iss"], "SK22222222222222222222222222222222");
        assert_eq!(claims["sub"], "AC11111111111111111111111111111111");
        assert_eq!(claims["grants"]["identity"], identity);
        assert_eq!(claims["grants"]["video"]["room"], creds["room"]);
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(),
            6 * 3600
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livekit_handshake_and_a_per_request_engine_choice() {
    let app = TestApp::spawn_with(Backend::Sqlite, |_, h| {
        with_all_engines(h, EngineKind::Livekit)
    })
    .await;
    let (bob, alice) = handshake(&app).await;
    assert_eq!(bob["videochatEngine"], "livekit");
    assert_eq!(bob["sharedSecret"], alice["sharedSecret"]);
    let claims = livekit_api::access_token::TokenVerifier::with_api_key("devkey", "secret")
        .verify(bob["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.video.room, bob["room"].as_str().unwrap());

    // An internal service rings with Agora although LiveKit is the default.
    let mut carol = app.connect("carol").await;
    let _dave_socket = app.connect("dave").await;
    let mut grpc = app.handshake_client().await;
    let ring = grpc
        .request_direct_videochat(pb::RequestDirectVideochatRequest {
            actor: Some(pb::Actor {
                user_id: "dave".into(),
                idempotency_key: "svc-1".into(),
            }),
            target_user: "carol".into(),
            engine: "agora".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .videochat_request_id;
    carol.event(REQUESTED).await;
    let creds = ok(&carol
        .request(
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": ring }),
        )
        .await);
    assert_eq!(creds["videochatEngine"], "agora");
    assert!(parse::parse(creds["token"].as_str().unwrap()).is_some());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_configured_engine_fails_at_start_up_naming_the_setting() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (gateway, mut handshake) = configs();
    handshake.database_url = db.url.clone();
    handshake.engines.twilio_account_sid = Some("AC1".into());
    let error = videochat::stack::Embedded::bind(gateway, handshake)
        .await
        .err()
        .expect("start-up refused")
        .to_string();
    assert!(error.contains("TWILIO_API_KEY_SID"), "{error}");
    assert!(error.contains("TWILIO_API_KEY_SECRET"), "{error}");
}
