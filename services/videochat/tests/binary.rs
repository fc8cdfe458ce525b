//! The real `videochat` binary: `serve` on ephemeral ports with JSON logs, a client over it,
//! trace ids in the logs, graceful exit on SIGTERM; and `token`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_videochat");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_json_with_trace_ids_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("vc-bin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .current_dir(&dir)
        .env_clear()
        .env("VIDEOCHAT_WS_ADDR", "127.0.0.1:0")
        .env("VIDEOCHAT_GRPC_ADDR", "127.0.0.1:0")
        .env("VIDEOCHAT_METRICS_ADDR", "127.0.0.1:0")
        .env("VIDEOCHAT_JWT_SECRET", SECRET)
        .env("VIDEOCHAT_LOG_FORMAT", "json")
        .env("RUST_LOG", "info,videochat_gateway=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    // The binary logs where it listens; every line is a JSON object.
    let mut ws = None;
    let mut metrics = None;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while ws.is_none() || metrics.is_none() {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("serve logs its addresses")
            .unwrap()
            .expect("log line");
        let entry: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if entry["message"] == "serving" {
            ws = entry["ws"].as_str().map(str::to_owned);
            metrics = entry["metrics"].as_str().map(str::to_owned);
        }
    }
    let ws = ws.unwrap();
    assert!(ws.starts_with("ws://127.0.0.1:"), "{ws}");

    // The default data directory is created under the working directory.
    assert!(dir.join("data").join("videochat.db").exists());

    // Wait for readiness, then use it.
    let addr: std::net::SocketAddr = ws
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .parse()
        .unwrap();
    while http_get(addr, "/readyz").await.map(|(s, _)| s) != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let metrics_addr: std::net::SocketAddr = metrics.unwrap().parse().unwrap();
    assert_eq!(http_get(metrics_addr, "/metrics").await.unwrap().0, 200);

    // SIGTERM: the socket is closed with 1012 and the process exits cleanly.
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(exit.success(), "exit status {exit}");

    // Log lines inside a request carry the request's trace id.
    let mut rest = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
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
