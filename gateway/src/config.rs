//! The gateway's one configuration struct, read from flags and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The development JWT secret used when none is configured. Anyone can mint tokens with it:
/// the gateway logs a loud warning when it is in use.
pub const DEV_JWT_SECRET: &str = "videochat-dev-secret-do-not-use-in-production";

#[derive(Clone, clap::Args)]
pub struct GatewayConfig {
    /// HTTP listen address for `/ws`, `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "VIDEOCHAT_WS_ADDR", default_value = "127.0.0.1:8080")]
    pub ws_addr: SocketAddr,

    /// The handshake service's gRPC endpoint.
    #[arg(
        long,
        env = "VIDEOCHAT_HANDSHAKE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub handshake_url: String,

    /// HS256 secret for client tokens. Ignored when a public key or JWKS file is set.
    #[arg(long, env = "VIDEOCHAT_JWT_SECRET", default_value = DEV_JWT_SECRET, hide_env_values = true)]
    pub jwt_secret: String,

    /// PEM public key (RSA or EC) for RS256/ES256 client tokens.
    #[arg(long, env = "VIDEOCHAT_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// JWKS file whose keys verify RS256/ES256 client tokens (matched by `kid`).
    #[arg(long, env = "VIDEOCHAT_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,

    /// Required `iss` of client tokens, if set.
    #[arg(long, env = "VIDEOCHAT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of client tokens, if set.
    #[arg(long, env = "VIDEOCHAT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Largest text frame answered normally, in bytes; larger ones get error 1002.
    #[arg(long, env = "VIDEOCHAT_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Largest WebSocket message read at all, in bytes; larger ones close the socket (1009).
    #[arg(long, env = "VIDEOCHAT_MAX_MESSAGE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Interval between server pings, in seconds.
    #[arg(long, env = "VIDEOCHAT_PING_INTERVAL_S", default_value_t = 20.0)]
    pub ping_interval_s: f64,

    /// A socket that sends nothing (not even a pong) for this long is closed, in seconds.
    #[arg(long, env = "VIDEOCHAT_IDLE_TIMEOUT_S", default_value_t = 60.0)]
    pub idle_timeout_s: f64,

    /// Frames per second a socket may send (sustained).
    #[arg(long, env = "VIDEOCHAT_RATE_LIMIT_PER_S", default_value_t = 50)]
    pub rate_limit_per_s: u32,

    /// Frames a socket may send in a burst.
    #[arg(long, env = "VIDEOCHAT_RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,

    /// Most sockets one gateway holds at once.
    #[arg(long, env = "VIDEOCHAT_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Deadline for one call to the handshake service, in milliseconds.
    #[arg(long, env = "VIDEOCHAT_RPC_TIMEOUT_MS", default_value_t = 10_000)]
    pub rpc_timeout_ms: u64,

    /// How long shutdown waits for sockets to close, in seconds.
    #[arg(long, env = "VIDEOCHAT_DRAIN_TIMEOUT_S", default_value_t = 10.0)]
    pub drain_timeout_s: f64,
}

impl GatewayConfig {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs_f64(self.ping_interval_s.max(0.05))
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_s.max(0.1))
    }
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms.max(1))
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout_s.max(0.0))
    }
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_public_key_file.is_none()
            && self.jwks_file.is_none()
            && self.jwt_secret == DEV_JWT_SECRET
    }
}

impl std::fmt::Debug for GatewayConfig {
    /// Secrets redacted: this is logged at start-up.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("ws_addr", &self.ws_addr)
            .field("handshake_url", &self.handshake_url)
            .field("jwt_secret", &"<redacted>")
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("ping_interval_s", &self.ping_interval_s)
            .field("idle_timeout_s", &self.idle_timeout_s)
            .field("rate_limit_per_s", &self.rate_limit_per_s)
            .field("rate_limit_burst", &self.rate_limit_burst)
            .field("max_connections", &self.max_connections)
            .field("rpc_timeout_ms", &self.rpc_timeout_ms)
            .field("drain_timeout_s", &self.drain_timeout_s)
            .finish()
    }
}
