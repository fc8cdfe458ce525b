//! The real `videochat` binary as a child process: `handshake` replicas and gateways for tests
//! that kill them the hard way (`SIGKILL`: their sockets close the way a crashed pod's do), and
//! `serve` for tests of the binary as a deployment runs it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::Instant;

use super::{DEADLINE, GATEWAY_TOKEN, SECRET, until_ready};

pub const BIN: &str = env!("CARGO_BIN_EXE_videochat");

/// A port nobody listens on now: a process killed on it can be started again on the same
/// address, as a restarted pod keeps its service address.
pub async fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Starts `videochat handshake` on `addr` over `database_url` (accepting the tests' gateway
/// credential, with `env` on top) and waits until it accepts connections. Killed when dropped.
pub async fn spawn_replica(database_url: &str, addr: SocketAddr, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(BIN);
    command
        .arg("handshake")
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("VIDEOCHAT_GRPC_ADDR", addr.to_string())
        .env("VIDEOCHAT_GRPC_GATEWAY_TOKENS", GATEWAY_TOKEN)
        .env("VIDEOCHAT_METRICS_ADDR", "127.0.0.1:0")
        .env("VIDEOCHAT_OUTBOX_POLL_MS", "200")
        .env("RUST_LOG", "warn");
    let child = spawn_quiet(command, env);
    let deadline = Instant::now() + DEADLINE;
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "replica on {addr} never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child
}

/// Starts `videochat gateway` on `addr` over `replicas` (with the tests' secret and gateway
/// credential, with `env` on top) and waits until `/readyz` answers 200, i.e. its event stream
/// is attached: a user it serves can be rung. Killed when dropped.
pub async fn spawn_gateway(
    addr: SocketAddr,
    replicas: &[SocketAddr],
    env: &[(&str, &str)],
) -> Child {
    let urls: Vec<String> = replicas.iter().map(|r| format!("http://{r}")).collect();
    let mut command = Command::new(BIN);
    command
        .arg("gateway")
        .env_clear()
        .env("VIDEOCHAT_WS_ADDR", addr.to_string())
        .env("VIDEOCHAT_HANDSHAKE_URL", urls.join(","))
        .env("VIDEOCHAT_GRPC_TOKEN", GATEWAY_TOKEN)
        .env("VIDEOCHAT_JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn");
    let child = spawn_quiet(command, env);
    until_ready(addr).await;
    child
}

/// Spawns `command` with `env` on top, its log on the test's stderr (shown when a test fails)
/// and its stdout discarded. Killed when dropped.
fn spawn_quiet(mut command: Command, env: &[(&str, &str)]) -> Child {
    command
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the videochat binary starts")
}

/// `videochat <subcommand>` in `dir`, sharing nothing with the test's environment: every port
/// ephemeral, logs as JSON lines on stdout (where `serve` says which ports it got). Killed when
/// dropped.
pub fn standalone(subcommand: &str, dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg(subcommand)
        .current_dir(dir)
        .env_clear()
        .env("VIDEOCHAT_WS_ADDR", "127.0.0.1:0")
        .env("VIDEOCHAT_GRPC_ADDR", "127.0.0.1:0")
        .env("VIDEOCHAT_METRICS_ADDR", "127.0.0.1:0")
        .env("VIDEOCHAT_LOG_FORMAT", "json")
        .kill_on_drop(true);
    command
}

/// A `videochat serve` that said where it listens and is ready.
pub struct Served {
    pub child: Child,
    /// Where the test reaches the WebSocket and HTTP endpoints (a wildcard bind on loopback).
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    /// The `serving` log line itself, as the process wrote it.
    pub serving: Value,
    /// The log lines after `serving`, until the process exits.
    pub log: UnboundedReceiver<String>,
}

impl Served {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// Starts `videochat serve` as [`standalone`] with `env` on top, and waits for its `serving`
/// log line, then until `/readyz` answers 200.
pub async fn spawn_serve(dir: &Path, env: &[(&str, &str)]) -> Served {
    let mut child = standalone("serve", dir)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("videochat serve starts");
    let mut log = forward_lines(child.stdout.take().unwrap());
    let serving = serving_line(&mut log).await;
    let addr = reachable(serving["ws"].as_str().expect("the ws address"));
    let metrics = serving["metrics"]
        .as_str()
        .expect("the metrics address")
        .parse()
        .unwrap();
    until_ready(addr).await;
    Served {
        child,
        addr,
        metrics,
        serving,
        log,
    }
}

/// Reads `stdout` to its end on a task of its own, so that the process never blocks on a full
/// pipe whether or not the test reads its log.
fn forward_lines(stdout: ChildStdout) -> UnboundedReceiver<String> {
    let (sender, receiver) = unbounded_channel();
    let mut lines = BufReader::new(stdout).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = sender.send(line);
        }
    });
    receiver
}

/// The `serving` log line; every line before it must be JSON too.
async fn serving_line(log: &mut UnboundedReceiver<String>) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let line = tokio::time::timeout_at(deadline, log.recv())
            .await
            .expect("serve logs its addresses")
            .expect("a log line before the process exits");
        let entry: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if entry["message"] == "serving" {
            return entry;
        }
    }
}

/// The address behind `ws://<addr>/ws`; a wildcard bind is reached on loopback.
fn reachable(ws_url: &str) -> SocketAddr {
    let mut addr: SocketAddr = ws_url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .parse()
        .unwrap_or_else(|e| panic!("{ws_url}: {e}"));
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// Sends `SIGTERM`, as an orchestrator stops a pod, and waits for the exit.
pub async fn terminate(child: &mut Child) -> ExitStatus {
    let pid = child.id().expect("running");
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}: {status}");
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits")
        .unwrap()
}
