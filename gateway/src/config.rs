//! The gateway's one configuration struct, read from flags and environment, and the check of
//! it that production mode runs at start-up ([`GatewayConfig::production_problems`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::MAX_LEEWAY_S;
use crate::origin::OriginPolicy;

/// The development JWT secret used when none is configured. Anyone can mint tokens with it:
/// the gateway logs a loud warning when it is in use.
pub const DEV_JWT_SECRET: &str = "videochat-dev-secret-do-not-use-in-production";

/// Shortest HS256 secret production mode accepts: RFC 7518 §3.2 asks for a key at least as long
/// as the hash output (256 bits).
pub const MIN_PRODUCTION_SECRET_BYTES: usize = 32;

#[derive(Clone, clap::Args)]
pub struct GatewayConfig {
    /// HTTP listen address for `/ws`, `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "VIDEOCHAT_WS_ADDR", default_value = "127.0.0.1:8080")]
    pub ws_addr: SocketAddr,

    /// The handshake service's gRPC endpoints, comma-separated (`http://host:port`). Calls are
    /// balanced over the replicas that answer health checks and retried on another one when a
    /// replica is unreachable; a DNS name stands for every address it resolves to (e.g. a
    /// Kubernetes headless Service).
    #[arg(
        long,
        env = "VIDEOCHAT_HANDSHAKE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub handshake_url: String,

    /// The bearer credential this gateway presents to the handshake service: one of the
    /// service's `VIDEOCHAT_GRPC_GATEWAY_TOKENS`.
    #[arg(long, env = "VIDEOCHAT_GRPC_TOKEN", hide_env_values = true)]
    pub grpc_token: Option<String>,

    /// PEM CA certificate that signed the handshake service's certificate, for an `https://`
    /// `VIDEOCHAT_HANDSHAKE_URL`.
    #[arg(long, env = "VIDEOCHAT_GRPC_TLS_CA_FILE")]
    pub grpc_tls_ca_file: Option<PathBuf>,

    /// PEM certificate the gateway presents to the handshake service (mutual TLS).
    #[arg(long, env = "VIDEOCHAT_GRPC_TLS_CLIENT_CERT_FILE")]
    pub grpc_tls_client_cert_file: Option<PathBuf>,

    /// PEM private key of that certificate.
    #[arg(long, env = "VIDEOCHAT_GRPC_TLS_CLIENT_KEY_FILE")]
    pub grpc_tls_client_key_file: Option<PathBuf>,

    /// Name the service's certificate must carry, when it is not the URL's host.
    #[arg(long, env = "VIDEOCHAT_GRPC_TLS_DOMAIN")]
    pub grpc_tls_domain: Option<String>,

    /// The network to the handshake service is private and encrypted by other means (a
    /// service mesh with mTLS): production mode then accepts an `http://` URL to another host.
    /// The same setting as the service's.
    #[arg(long = "handshake-trust-network", env = "VIDEOCHAT_GRPC_TRUST_NETWORK", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub handshake_trust_network: bool,
    /// How often the DNS names in `VIDEOCHAT_HANDSHAKE_URL` are resolved again, in seconds
    /// (replicas added or removed are found within this).
    #[arg(long, env = "VIDEOCHAT_HANDSHAKE_RESOLVE_S", default_value_t = 5.0)]
    pub handshake_resolve_s: f64,

    /// How often every handshake replica is health-checked, in milliseconds. A call that finds
    /// a replica gone also triggers a check at once.
    #[arg(long, env = "VIDEOCHAT_HANDSHAKE_PROBE_MS", default_value_t = 1_000)]
    pub handshake_probe_ms: u64,

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

    /// Clock skew tolerated on `exp` and `nbf`, in seconds (at most 600).
    #[arg(long, env = "VIDEOCHAT_JWT_LEEWAY_S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=MAX_LEEWAY_S))]
    pub jwt_leeway_s: u64,

    /// Accept tokens without `exp` (they never expire). Development only: production mode
    /// refuses to start with it.
    #[arg(long, env = "VIDEOCHAT_JWT_ALLOW_NO_EXP", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub jwt_allow_no_exp: bool,

    /// How often the JWKS file is checked for changes (rotated keys), in seconds.
    #[arg(long, env = "VIDEOCHAT_JWKS_RELOAD_S", default_value_t = 10.0)]
    pub jwks_reload_s: f64,

    /// Origins allowed to open sockets from a browser, comma-separated
    /// (`https://app.example.com`). Unset: any origin (development). `*`: any origin, stated.
    /// Requests without an `Origin` header (non-browser clients) are always allowed.
    #[arg(long, env = "VIDEOCHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// TLS is terminated by a proxy in front of the gateway. Production mode requires it when
    /// `VIDEOCHAT_WS_ADDR` is not a loopback address (the gateway itself speaks plain ws://).
    #[arg(long, env = "VIDEOCHAT_TRUST_PROXY_TLS", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub trust_proxy_tls: bool,

    /// A connection must finish sending its HTTP request headers within this many seconds, or
    /// it is closed (slow or stalled upgrades).
    #[arg(long, env = "VIDEOCHAT_HEADER_READ_TIMEOUT_S", default_value_t = 10.0)]
    pub header_read_timeout_s: f64,

    /// Most connections still in their HTTP phase (not yet upgraded to a WebSocket) at once;
    /// further ones are answered 503 and closed at once.
    #[arg(long, env = "VIDEOCHAT_MAX_PENDING_UPGRADES", default_value_t = 1024)]
    pub max_pending_upgrades: usize,

    /// Most sockets one user may hold on this gateway; one more is answered HTTP 429.
    #[arg(long, env = "VIDEOCHAT_MAX_SOCKETS_PER_USER", default_value_t = 32)]
    pub max_sockets_per_user: usize,

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
    /// How the replica list behind `VIDEOCHAT_HANDSHAKE_URL` is refreshed.
    pub fn handshake_refresh(&self) -> crate::endpoints::Refresh {
        crate::endpoints::Refresh {
            resolve_every: Duration::from_secs_f64(self.handshake_resolve_s.max(0.1)),
            probe_every: Duration::from_millis(self.handshake_probe_ms.max(50)),
        }
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout_s.max(0.0))
    }
    pub fn jwks_reload(&self) -> Duration {
        Duration::from_secs_f64(self.jwks_reload_s.max(0.01))
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.header_read_timeout_s.max(0.01))
    }
    pub fn uses_dev_secret(&self) -> bool {
        self.uses_secret() && self.jwt_secret == DEV_JWT_SECRET
    }
    /// HS256 with `jwt_secret` (no public key or JWKS configured).
    pub fn uses_secret(&self) -> bool {
        self.jwt_public_key_file.is_none() && self.jwks_file.is_none()
    }

    /// Every setting that makes this gateway unsafe to expose, each naming the setting. Empty
    /// means production mode may start. Development mode does not call this.
    pub fn production_problems(&self) -> Vec<UnsafeSetting> {
        let mut problems = Vec::new();
        if self.uses_dev_secret() {
            problems.push(UnsafeSetting::DevelopmentSecret);
        } else if self.uses_secret() && self.jwt_secret.len() < MIN_PRODUCTION_SECRET_BYTES {
            problems.push(UnsafeSetting::ShortSecret(self.jwt_secret.len()));
        }
        if self.jwt_allow_no_exp {
            problems.push(UnsafeSetting::TokensWithoutExpiry);
        }
        if !self.ws_addr.ip().is_loopback() && !self.trust_proxy_tls {
            problems.push(UnsafeSetting::PlaintextWebSocket(self.ws_addr));
        }
        if self.allowed_origins.is_empty() {
            problems.push(UnsafeSetting::AnyOrigin);
        } else if let Err(error) = OriginPolicy::parse(&self.allowed_origins) {
            problems.push(UnsafeSetting::BadOrigins(error.to_string()));
        }
        match self.grpc_token.as_deref().map(str::trim) {
            None | Some("") => problems.push(UnsafeSetting::NoGrpcToken),
            Some(token) if token.len() < MIN_PRODUCTION_SECRET_BYTES => {
                problems.push(UnsafeSetting::ShortGrpcToken(token.len()))
            }
            Some(_) => {}
        }
        if !self.handshake_trust_network && plaintext_to_another_host(&self.handshake_url) {
            problems.push(UnsafeSetting::PlaintextHandshakeUrl(
                self.handshake_url.clone(),
            ));
        }
        problems
    }
}

/// An `http://` URL whose host is not loopback: credentials and events would cross the
/// network in clear.
fn plaintext_to_another_host(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    if uri.scheme_str() != Some("http") {
        return false;
    }
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// A setting production mode refuses, with what to do instead. Each message names the
/// environment variable at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeSetting {
    #[error(
        "VIDEOCHAT_JWT_SECRET is unset or the published development secret, with which anyone \
         can mint tokens: set VIDEOCHAT_JWT_SECRET (at least {MIN_PRODUCTION_SECRET_BYTES} \
         random bytes), VIDEOCHAT_JWT_PUBLIC_KEY_FILE or VIDEOCHAT_JWKS_FILE"
    )]
    DevelopmentSecret,
    #[error(
        "VIDEOCHAT_JWT_SECRET is {0} bytes long: production needs at least \
         {MIN_PRODUCTION_SECRET_BYTES} random bytes (or VIDEOCHAT_JWT_PUBLIC_KEY_FILE / VIDEOCHAT_JWKS_FILE)"
    )]
    ShortSecret(usize),
    #[error(
        "VIDEOCHAT_JWT_ALLOW_NO_EXP=true accepts tokens that never expire: it is for development only"
    )]
    TokensWithoutExpiry,
    #[error(
        "VIDEOCHAT_WS_ADDR={0} accepts plain ws:// from other hosts, and the gateway does not \
         terminate TLS: put a TLS-terminating proxy in front and set VIDEOCHAT_TRUST_PROXY_TLS=true, \
         or bind a loopback address"
    )]
    PlaintextWebSocket(SocketAddr),
    #[error(
        "VIDEOCHAT_ALLOWED_ORIGINS is not set: list the web origins allowed to open sockets \
         (https://app.example.com,…), or set it to * to allow any origin on purpose"
    )]
    AnyOrigin,
    #[error("VIDEOCHAT_ALLOWED_ORIGINS is invalid: {0}")]
    BadOrigins(String),
    #[error(
        "VIDEOCHAT_GRPC_TOKEN is not set: the handshake service admits gateways by this \
         credential (one of its VIDEOCHAT_GRPC_GATEWAY_TOKENS)"
    )]
    NoGrpcToken,
    #[error(
        "VIDEOCHAT_GRPC_TOKEN is {0} bytes long: production needs at least \
         {MIN_PRODUCTION_SECRET_BYTES} random bytes"
    )]
    ShortGrpcToken(usize),
    #[error(
        "VIDEOCHAT_HANDSHAKE_URL={0} is plain http:// to another host, so the gateway's \
         credential and every event cross the network in clear: use https:// with \
         VIDEOCHAT_GRPC_TLS_CA_FILE (and the service's TLS settings), or state an encrypted \
         private network with VIDEOCHAT_GRPC_TRUST_NETWORK=true"
    )]
    PlaintextHandshakeUrl(String),
}

impl std::fmt::Debug for GatewayConfig {
    /// Secrets redacted: this is logged at start-up.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("ws_addr", &self.ws_addr)
            .field("handshake_url", &self.handshake_url)
            .field(
                "grpc_token",
                &self.grpc_token.as_ref().map(|_| "<redacted>"),
            )
            .field("grpc_tls_ca_file", &self.grpc_tls_ca_file)
            .field("grpc_tls_client_cert_file", &self.grpc_tls_client_cert_file)
            .field("grpc_tls_client_key_file", &self.grpc_tls_client_key_file)
            .field("grpc_tls_domain", &self.grpc_tls_domain)
            .field("handshake_trust_network", &self.handshake_trust_network)
            .field("handshake_resolve_s", &self.handshake_resolve_s)
            .field("handshake_probe_ms", &self.handshake_probe_ms)
            .field("jwt_secret", &"<redacted>")
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway_s", &self.jwt_leeway_s)
            .field("jwt_allow_no_exp", &self.jwt_allow_no_exp)
            .field("jwks_reload_s", &self.jwks_reload_s)
            .field("allowed_origins", &self.allowed_origins)
            .field("trust_proxy_tls", &self.trust_proxy_tls)
            .field("header_read_timeout_s", &self.header_read_timeout_s)
            .field("max_pending_upgrades", &self.max_pending_upgrades)
            .field("max_sockets_per_user", &self.max_sockets_per_user)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        gateway: GatewayConfig,
    }

    /// Later flags win over earlier ones, so a case can override the safe base.
    fn parse(args: &[&str]) -> GatewayConfig {
        let matches = Args::command()
            .args_override_self(true)
            .try_get_matches_from(std::iter::once("gateway").chain(args.iter().copied()))
            .unwrap();
        Args::from_arg_matches(&matches).unwrap().gateway
    }

    const SAFE: &[&str] = &[
        "--jwt-secret",
        "0123456789abcdef0123456789abcdef",
        "--allowed-origins",
        "https://app.example.test",
        "--grpc-token",
        "a-gateway-credential-of-32-bytes",
    ];

    fn problems(extra: &[&str]) -> Vec<UnsafeSetting> {
        let args: Vec<&str> = SAFE.iter().chain(extra).copied().collect();
        parse(&args).production_problems()
    }

    #[test]
    fn the_defaults_are_not_fit_for_production() {
        let problems = parse(&[]).production_problems();
        assert_eq!(
            problems,
            vec![
                UnsafeSetting::DevelopmentSecret,
                UnsafeSetting::AnyOrigin,
                UnsafeSetting::NoGrpcToken
            ]
        );
    }

    #[test]
    fn a_safe_configuration_passes() {
        assert_eq!(problems(&[]), vec![]);
        assert_eq!(
            problems(&["--ws-addr", "0.0.0.0:8080", "--trust-proxy-tls"]),
            vec![]
        );
        assert_eq!(
            problems(&["--jwks-file", "/etc/jwks.json", "--jwt-secret", "short"]),
            vec![],
            "the secret is not used with a JWKS file"
        );
        assert_eq!(problems(&["--allowed-origins", "*"]), vec![]);
        for url in [
            "http://localhost:50051",
            "http://[::1]:50051",
            "https://handshake.internal:50051",
        ] {
            assert_eq!(problems(&["--handshake-url", url]), vec![], "{url}");
        }
        assert_eq!(
            problems(&[
                "--handshake-url",
                "http://handshake.internal:50051",
                "--handshake-trust-network"
            ]),
            vec![]
        );
    }

    #[test]
    fn each_unsafe_setting_is_refused_naming_it() {
        let cases: &[(&[&str], UnsafeSetting, &str)] = &[
            (
                &["--jwt-secret", "too-short"],
                UnsafeSetting::ShortSecret(9),
                "VIDEOCHAT_JWT_SECRET",
            ),
            (
                &["--jwt-secret", DEV_JWT_SECRET],
                UnsafeSetting::DevelopmentSecret,
                "VIDEOCHAT_JWT_SECRET",
            ),
            (
                &["--jwt-allow-no-exp"],
                UnsafeSetting::TokensWithoutExpiry,
                "VIDEOCHAT_JWT_ALLOW_NO_EXP",
            ),
            (
                &["--jwt-allow-no-exp=true"],
                UnsafeSetting::TokensWithoutExpiry,
                "VIDEOCHAT_JWT_ALLOW_NO_EXP",
            ),
            (
                &["--ws-addr", "0.0.0.0:8080"],
                UnsafeSetting::PlaintextWebSocket("0.0.0.0:8080".parse().unwrap()),
                "VIDEOCHAT_TRUST_PROXY_TLS",
            ),
            (
                &["--ws-addr", "[::]:8080", "--trust-proxy-tls=false"],
                UnsafeSetting::PlaintextWebSocket("[::]:8080".parse().unwrap()),
                "VIDEOCHAT_WS_ADDR",
            ),
            (
                &["--allowed-origins", "app.example.test"],
                UnsafeSetting::BadOrigins(
                    "\"app.example.test\" is not an origin (expected scheme://host[:port], `null` or `*`)"
                        .into(),
                ),
                "VIDEOCHAT_ALLOWED_ORIGINS",
            ),
        ];
        let cases: Vec<(&[&str], UnsafeSetting, &str)> = cases
            .iter()
            .cloned()
            .chain([
                (
                    &["--grpc-token", "short"][..],
                    UnsafeSetting::ShortGrpcToken(5),
                    "VIDEOCHAT_GRPC_TOKEN",
                ),
                (
                    &["--grpc-token", ""][..],
                    UnsafeSetting::NoGrpcToken,
                    "VIDEOCHAT_GRPC_TOKEN",
                ),
                (
                    &["--handshake-url", "http://10.0.0.7:50051"][..],
                    UnsafeSetting::PlaintextHandshakeUrl("http://10.0.0.7:50051".into()),
                    "VIDEOCHAT_HANDSHAKE_URL",
                ),
            ])
            .collect();
        for (args, expected, names) in &cases {
            let found = problems(args);
            assert_eq!(found, vec![expected.clone()], "{args:?}");
            assert!(found[0].to_string().contains(names), "{}", found[0]);
        }
        assert!(
            UnsafeSetting::AnyOrigin
                .to_string()
                .contains("VIDEOCHAT_ALLOWED_ORIGINS")
        );
        assert_eq!(
            problems(&["--jwt-allow-no-exp=false", "--ws-addr", "127.0.0.2:1"]),
            vec![]
        );
    }

    #[test]
    fn leeway_is_bounded_at_parse_time() {
        assert_eq!(parse(&[]).jwt_leeway_s, 30);
        assert_eq!(parse(&["--jwt-leeway-s", "0"]).jwt_leeway_s, 0);
        assert!(
            Args::try_parse_from(["gateway", "--jwt-leeway-s", "601"]).is_err(),
            "a leeway over {MAX_LEEWAY_S} s is refused"
        );
    }
}
