//! The gateway's limits before a connection is a WebSocket, and the one counter every limit is
//! counted in (`videochat_gateway_limits_total{limit}`).
//!
//! A connection is *pending* from accept until its HTTP phase ends: it upgraded, or it closed.
//! Pending connections hold no user state yet but cost memory and a task, and before this module
//! nothing bounded them: a client could open a TCP connection, send half a request line and keep
//! it forever. Two limits close that:
//!
//! - the header-read timeout (`VIDEOCHAT_HEADER_READ_TIMEOUT_S`): a connection must send its
//!   whole request head within that time from when hyper starts reading it (also between
//!   requests on a kept-alive connection), or hyper closes it;
//! - the pending-upgrade cap (`VIDEOCHAT_MAX_PENDING_UPGRADES`): a semaphore permit taken at
//!   accept and released when the HTTP phase ends; with none left, a new connection is answered
//!   a bare `503` and closed at once, without being read.
//!
//! Upgraded sockets are bounded separately (`VIDEOCHAT_MAX_CONNECTIONS`, per user
//! `VIDEOCHAT_MAX_SOCKETS_PER_USER`), so stalled upgrades can never crowd out live sockets nor
//! the other way round.

use std::sync::Arc;

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::GatewayConfig;

/// Every limit the gateway enforces, as labelled in `videochat_gateway_limits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A request head not complete within the header-read timeout: the connection is closed.
    HeaderReadTimeout,
    /// No pending-upgrade permit left at accept: `503`, closed.
    PendingUpgrades,
    /// `VIDEOCHAT_MAX_CONNECTIONS` sockets open: the upgrade is answered `503`.
    MaxConnections,
    /// The user already holds `VIDEOCHAT_MAX_SOCKETS_PER_USER` sockets here: `429`.
    SocketsPerUser,
    /// The handshake service refused the socket: the user holds
    /// `VIDEOCHAT_MAX_SOCKETS_PER_USER_CLUSTER` sockets across all gateways: `429` naming 10019.
    SocketsPerUserCluster,
    /// A browser origin not in `VIDEOCHAT_ALLOWED_ORIGINS`: `403`.
    Origin,
    /// A message over `VIDEOCHAT_MAX_MESSAGE_BYTES`: the socket is closed with 1009.
    MessageSize,
    /// More frames than the socket's rate allows: error 1003, the socket stays open.
    Rate,
}

impl Limit {
    pub fn label(self) -> &'static str {
        match self {
            Limit::HeaderReadTimeout => "header_read_timeout",
            Limit::PendingUpgrades => "pending_upgrades",
            Limit::MaxConnections => "max_connections",
            Limit::SocketsPerUser => "sockets_per_user",
            Limit::SocketsPerUserCluster => "sockets_per_user_cluster",
            Limit::Origin => "origin",
            Limit::MessageSize => "message_size",
            Limit::Rate => "rate",
        }
    }
}

/// Counts one trip of `limit`.
pub fn hit(limit: Limit) {
    metrics::counter!("videochat_gateway_limits_total", "limit" => limit.label()).increment(1);
}

/// Largest request head buffered, in bytes (hyper's default is about 400 KiB). An upgrade needs
/// a few KiB (a 16 KiB token at most, plus a browser's headers); a larger head gets `431`. This
/// bounds the memory of each pending connection, so of all of them together.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// The HTTP/1 server settings of every connection: the header-read timeout needs a timer,
/// without which hyper silently never times out.
pub fn http1_builder(config: &GatewayConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout())
        // The buffer bound alone is soft (one read may overshoot it); the head bound is exact.
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .max_header_size(MAX_REQUEST_HEAD_BYTES);
    builder
}

/// Connections between accept and the end of their HTTP phase.
#[derive(Clone)]
pub struct PendingUpgrades {
    permits: Arc<Semaphore>,
}

impl PendingUpgrades {
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// A permit for a connection just accepted, to hold until its HTTP phase ends; `None` when
    /// the cap is reached (counted).
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            hit(Limit::PendingUpgrades);
        }
        permit
    }
}

/// Turns away a connection accepted over the pending-upgrade cap: a bare `503` if the socket
/// can take it right now, then close. Nothing is read and nothing waits, so a flood of
/// connections costs no more than accepting them.
pub fn refuse_at_accept(stream: TcpStream) {
    const BODY: &str = "too many connections waiting to upgrade; retry shortly\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Retry-After: 1\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
    drop(stream);
}

/// Whether a hyper connection error is the header-read timeout (counted when it is).
pub fn note_connection_error(error: &hyper::Error) {
    if error.is_timeout() {
        hit(Limit::HeaderReadTimeout);
    }
}
