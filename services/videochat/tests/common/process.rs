//! The real `videochat handshake` binary as a child process, for tests that kill it the hard
//! way (`SIGKILL`: its sockets close the way a crashed pod's do).

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::{DEADLINE, GATEWAY_TOKEN};

pub const BIN: &str = env!("CARGO_BIN_EXE_videochat");

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
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("videochat handshake starts");
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
