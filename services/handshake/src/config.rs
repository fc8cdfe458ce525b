//! The handshake service's one configuration struct, read from flags and environment.

use std::net::SocketAddr;
use std::time::Duration;

use crate::engine::EngineConfig;

/// Where the embedded default keeps its data when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/videochat.db";

#[derive(Clone, Debug, clap::Args)]
pub struct HandshakeConfig {
    /// gRPC listen address (handshake, user directory, gateway link, health, reflection).
    #[arg(long, env = "VIDEOCHAT_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Prometheus `/metrics` listen address of the service.
    #[arg(long, env = "VIDEOCHAT_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,

    /// `postgres://…` or `sqlite://…`; the embedded default is a SQLite file under ./data/.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Postgres connection pool size per replica.
    #[arg(long, env = "VIDEOCHAT_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a request rings before it times out, in seconds.
    #[arg(long, env = "VIDEOCHAT_RING_TIMEOUT_S", default_value_t = 45.0)]
    pub ring_timeout_s: f64,

    /// How long a gateway's sockets count as present without a heartbeat, in milliseconds.
    #[arg(long, env = "VIDEOCHAT_PRESENCE_LEASE_MS", default_value_t = 15_000)]
    pub presence_lease_ms: u64,

    /// How often event streams re-read the outbox when no notification came, in milliseconds.
    #[arg(long, env = "VIDEOCHAT_OUTBOX_POLL_MS", default_value_t = 1_000)]
    pub outbox_poll_ms: u64,

    /// How long delivered events stay in the outbox (for gateways resuming), in seconds.
    #[arg(long, env = "VIDEOCHAT_OUTBOX_RETENTION_S", default_value_t = 3_600)]
    pub outbox_retention_s: u64,

    #[command(flatten)]
    pub engines: EngineConfig,
}

impl HandshakeConfig {
    pub fn ring_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.ring_timeout_s.max(0.0))
    }

    pub fn presence_lease(&self) -> Duration {
        Duration::from_millis(self.presence_lease_ms)
    }

    pub fn outbox_poll(&self) -> Duration {
        Duration::from_millis(self.outbox_poll_ms.max(10))
    }

    /// The database URL with any password replaced, for logs.
    pub fn redacted_database_url(&self) -> String {
        redact_url_password(&self.database_url)
    }
}

fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url_password;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact_url_password("postgres://app:hunter2@db:5432/vc"),
            "postgres://app:<redacted>@db:5432/vc"
        );
        assert_eq!(
            redact_url_password("postgres://app@db/vc"),
            "postgres://app@db/vc"
        );
        assert_eq!(
            redact_url_password("sqlite://data/x.db"),
            "sqlite://data/x.db"
        );
    }
}
