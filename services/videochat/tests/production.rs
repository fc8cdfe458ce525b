//! `VIDEOCHAT_ENV=production` on the real binary: it refuses to start with unsafe settings,
//! naming each one, and starts and serves with safe ones (settings read from the environment,
//! as a deployment passes them).

mod common;

use common::*;
use serde_json::json;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const STRONG_SECRET: &str = "a-production-secret-of-32-bytes!";

fn base(command: &str, dir: &std::path::Path) -> Command {
    let mut child = process::standalone(command, dir);
    child.env("VIDEOCHAT_ENV", "production");
    child
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vc-prod-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_to_start_naming_every_unsafe_setting() {
    let dir = temp_dir();
    let output = tokio::time::timeout(
        DEADLINE,
        base("serve", &dir)
            .env("VIDEOCHAT_WS_ADDR", "0.0.0.0:0")
            .env("VIDEOCHAT_JWT_ALLOW_NO_EXP", "true")
            .output(),
    )
    .await
    .expect("exits at once")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for setting in [
        "VIDEOCHAT_ENV=production refuses to start",
        "VIDEOCHAT_JWT_SECRET",
        "VIDEOCHAT_JWT_ALLOW_NO_EXP",
        "VIDEOCHAT_TRUST_PROXY_TLS",
        "VIDEOCHAT_ALLOWED_ORIGINS",
        "LIVEKIT_API_SECRET",
    ] {
        assert!(stderr.contains(setting), "{setting} not named in: {stderr}");
    }
    // Refused before anything was opened: no database was created.
    assert!(!dir.join("data").exists());

    // The gateway alone, with one problem: only that one is named.
    let output = base("gateway", &dir)
        .env("VIDEOCHAT_JWT_SECRET", "short")
        .env("VIDEOCHAT_ALLOWED_ORIGINS", "https://app.example.test")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("VIDEOCHAT_JWT_SECRET is 5 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("VIDEOCHAT_ALLOWED_ORIGINS"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_starts_and_serves_with_safe_settings() {
    let dir = temp_dir();
    let mut served = process::spawn_serve(
        &dir,
        &[
            ("VIDEOCHAT_ENV", "production"),
            // All interfaces, with TLS stated to end at a proxy in front.
            ("VIDEOCHAT_WS_ADDR", "0.0.0.0:0"),
            ("VIDEOCHAT_TRUST_PROXY_TLS", "true"),
            ("VIDEOCHAT_JWT_SECRET", STRONG_SECRET),
            ("VIDEOCHAT_ALLOWED_ORIGINS", "https://app.example.test"),
            ("LIVEKIT_API_KEY", "APIprod"),
            ("LIVEKIT_API_SECRET", "a-livekit-secret-of-our-own"),
        ],
    )
    .await;
    let url = served.ws_url();
    let token = videochat_gateway::auth::sign_dev_token(STRONG_SECRET, "alice", None, 600).unwrap();
    let mut alice = Client::connect(&url, "alice", &token).await;
    err(
        &alice
            .request(
                "videochat:requestDirectVideochat",
                json!({ "targetUser": "nobody" }),
            )
            .await,
        1021,
    );
    // The origin list read from the environment is in force.
    let mut request = format!("{url}?access_token={token}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example.test".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let exit = process::terminate(&mut served.child).await;
    assert!(exit.success(), "exit status {exit}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `command` with `env` in production mode and returns what it printed on stderr; it must
/// exit at once, unsuccessfully.
async fn refused(command: &str, env: &[(&str, &str)]) -> String {
    let dir = temp_dir();
    let mut child = base(command, &dir);
    for (key, value) in env {
        child.env(key, value);
    }
    let output = tokio::time::timeout(DEADLINE, child.output())
        .await
        .expect("exits at once")
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success(), "{command} {env:?} started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_unauthenticated_or_plaintext_internal_grpc() {
    const TOKEN: &str = "an-internal-credential-of-32-byte";
    let livekit = [
        ("LIVEKIT_API_KEY", "APIprod"),
        ("LIVEKIT_API_SECRET", "a-livekit-secret-of-our-own"),
    ];
    let handshake = |extra: &[(&'static str, &'static str)]| {
        livekit.iter().chain(extra).copied().collect::<Vec<_>>()
    };
    type Case = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        (
            "handshake",
            handshake(&[]),
            &[
                "VIDEOCHAT_GRPC_GATEWAY_TOKENS",
                "VIDEOCHAT_GRPC_SERVICE_TOKENS",
            ],
        ),
        (
            "handshake",
            handshake(&[("VIDEOCHAT_GRPC_AUTH", "none")]),
            &["VIDEOCHAT_GRPC_AUTH=none"],
        ),
        (
            "handshake",
            handshake(&[("VIDEOCHAT_GRPC_SERVICE_TOKENS", "short")]),
            &["shorter than 32 bytes"],
        ),
        (
            "handshake",
            handshake(&[
                ("VIDEOCHAT_GRPC_GATEWAY_TOKENS", TOKEN),
                ("VIDEOCHAT_GRPC_ADDR", "0.0.0.0:0"),
            ]),
            &[
                "VIDEOCHAT_GRPC_ADDR=0.0.0.0:0",
                "VIDEOCHAT_GRPC_TLS_CERT_FILE",
                "VIDEOCHAT_GRPC_TRUST_NETWORK",
            ],
        ),
        (
            "gateway",
            vec![
                ("VIDEOCHAT_JWT_SECRET", STRONG_SECRET),
                ("VIDEOCHAT_ALLOWED_ORIGINS", "https://app.example.test"),
            ],
            &["VIDEOCHAT_GRPC_TOKEN is not set"],
        ),
        (
            "gateway",
            vec![
                ("VIDEOCHAT_JWT_SECRET", STRONG_SECRET),
                ("VIDEOCHAT_ALLOWED_ORIGINS", "https://app.example.test"),
                ("VIDEOCHAT_GRPC_TOKEN", TOKEN),
                ("VIDEOCHAT_HANDSHAKE_URL", "http://handshake.internal:50051"),
            ],
            &["VIDEOCHAT_HANDSHAKE_URL=http://handshake.internal:50051"],
        ),
    ];
    for (command, env, named) in cases {
        let stderr = refused(command, &env).await;
        assert!(
            stderr.contains("VIDEOCHAT_ENV=production refuses to start"),
            "{stderr}"
        );
        for name in named {
            assert!(
                stderr.contains(name),
                "{command} {env:?}: {name} not named in {stderr}"
            );
        }
    }

    // Outside production too, a standalone service with no credential does not start: internal
    // authentication is required by default.
    let dir = temp_dir();
    let output = tokio::time::timeout(
        DEADLINE,
        base("handshake", &dir)
            .env("VIDEOCHAT_ENV", "development")
            .env("DATABASE_URL", format!("sqlite://{}/x.db", dir.display()))
            .output(),
    )
    .await
    .expect("exits at once")
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("VIDEOCHAT_GRPC_AUTH=none for a development run"),
        "{stderr}"
    );
}
