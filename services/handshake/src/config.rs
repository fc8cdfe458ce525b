//! The handshake service's one configuration struct, read from flags and environment, and the
//! check of it that production mode runs at start-up ([`HandshakeConfig::production_problems`]).

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
    /// Gateways heartbeat every quarter lease, so this is also the longest a gateway that died
    /// without a goodbye keeps its users "available" (rings to nobody) — and how long a
    /// database outage can last before gateways must reattach to restore presence.
    #[arg(long, env = "VIDEOCHAT_PRESENCE_LEASE_MS", default_value_t = 6_000)]
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

    /// Every setting that makes this replica unsafe to run for real, each naming the setting.
    /// Empty means production mode may start. Development mode does not call this.
    pub fn production_problems(&self) -> Vec<UnsafeSetting> {
        let mut problems = Vec::new();
        let engines = &self.engines;
        if engines.livekit_api_key.as_deref() == Some(LIVEKIT_DEV_KEY)
            || engines.livekit_api_secret.as_deref() == Some(LIVEKIT_DEV_SECRET)
        {
            problems.push(UnsafeSetting::LivekitDevelopmentKeys);
        }
        // HOOK(#9, internal gRPC authentication — the lead's): refuse here a gRPC listener
        // (`VIDEOCHAT_GRPC_ADDR`) that would serve unauthenticated calls, i.e. no internal
        // credentials configured. Add the variant to `UnsafeSetting` beside the others.
        problems
    }

    /// The database URL with any password replaced, for logs.
    pub fn redacted_database_url(&self) -> String {
        redact_url_password(&self.database_url)
    }
}

/// LiveKit's development key pair (`livekit-server --dev`), the embedded default.
const LIVEKIT_DEV_KEY: &str = "devkey";
const LIVEKIT_DEV_SECRET: &str = "secret";

/// A setting production mode refuses, with what to do instead. Each message names the
/// environment variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeSetting {
    #[error(
        "LIVEKIT_API_KEY/LIVEKIT_API_SECRET are LiveKit's published development pair \
         (devkey/secret): anyone could mint join tokens for any room; set your LiveKit \
         project's key pair (or set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET empty \
         to turn LiveKit off)"
    )]
    LivekitDevelopmentKeys,
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
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        handshake: HandshakeConfig,
    }

    #[test]
    fn production_refuses_livekit_development_keys_naming_them() {
        let config = |args: &[&str]| {
            Args::try_parse_from(std::iter::once("handshake").chain(args.iter().copied()))
                .unwrap()
                .handshake
        };
        let problems = config(&[]).production_problems();
        assert_eq!(problems, vec![UnsafeSetting::LivekitDevelopmentKeys]);
        assert!(problems[0].to_string().contains("LIVEKIT_API_SECRET"));
        let own = [
            "--livekit-api-key",
            "APIxyz",
            "--livekit-api-secret",
            "s3cr3t-of-our-own",
        ];
        assert_eq!(config(&own).production_problems(), vec![]);
        let off = [
            "--livekit-url",
            "",
            "--livekit-api-key",
            "",
            "--livekit-api-secret",
            "",
        ];
        assert_eq!(config(&off).production_problems(), vec![]);
    }

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
