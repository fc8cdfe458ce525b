//! The real `videochat` binary: `serve` on ephemeral ports with JSON logs, a client over it,
//! trace ids in the logs, graceful exit on SIGTERM; and `token`.

mod common;

use common::process::BIN;
use common::*;
use serde_json::{Value, json};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_json_with_trace_ids_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("vc-bin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // The binary logs where it listens; every line is a JSON object (those before `serving` are
    // checked as they are read).
    let mut served = process::spawn_serve(
        &dir,
        &[
            ("VIDEOCHAT_JWT_SECRET", SECRET),
            ("RUST_LOG", "info,videochat_gateway=debug"),
        ],
    )
    .await;
    let ws = served.serving["ws"].as_str().unwrap().to_owned();
    assert!(ws.starts_with("ws://127.0.0.1:"), "{ws}");

    // The default data directory is created under the working directory.
    assert!(dir.join("data").join("videochat.db").exists());

    let mut alice = Client::connect(&ws, "alice", &TestApp::token("alice")).await;
    err(
        &alice
            .request(
                "videochat:requestDirectVideochat",
                json!({ "targetUser": "nobody" }),
            )
            .await,
        1021,
    );
    assert_eq!(http_get(served.metrics, "/metrics").await.unwrap().0, 200);

    // SIGTERM: the socket is closed with 1012 and the process exits cleanly.
    let exit = process::terminate(&mut served.child).await;
    assert!(exit.success(), "exit status {exit}");

    // Log lines inside a request carry the request's trace id.
    let mut rest = Vec::new();
    while let Some(line) = served.log.recv().await {
        rest.push(
            serde_json::from_str::<Value>(&line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}")),
        );
    }
    assert!(rest.iter().any(|e| e["message"] == "shutdown requested"));
    let answered = rest
        .iter()
        .find(|e| e["message"] == "frame answered")
        .expect("the frame's log line");
    assert_eq!(answered["code"], 1021);
    let trace_id = answered["span"]["trace_id"]
        .as_str()
        .expect("trace id on the log line");
    assert_eq!(trace_id.len(), 32);
    assert!(trace_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(answered["span"]["videochat.user"], "alice");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn token_prints_a_jwt_the_gateway_accepts() {
    let output = Command::new(BIN)
        .args(["token", "alice", "--name", "Alice Liddell"])
        .env("VIDEOCHAT_JWT_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let principal = videochat_gateway::auth::Authenticator::from_config(&configs().0)
        .unwrap()
        .authenticate(&token)
        .unwrap();
    assert_eq!(principal.user_id, "alice");
    assert_eq!(principal.profile.first_name.as_deref(), Some("Alice"));
    assert_eq!(principal.profile.last_name.as_deref(), Some("Liddell"));
}
