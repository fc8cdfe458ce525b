//! The handshake service's one configuration struct, read from flags and environment, and the
//! check of it that production mode runs at start-up ([`HandshakeConfig::production_problems`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::EngineConfig;
use crate::machine::Limits;

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

    /// Postgres connections per replica: half for the hot path's pool (handshakes' loads and
    /// writes), half for everything else (at least one and two; `store/postgres/mod.rs`).
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

    /// How long call history is kept (rings that ended, with their outcome), in seconds.
    /// Default 90 days.
    #[arg(long, env = "VIDEOCHAT_HISTORY_RETENTION_S", default_value_t = 90 * 24 * 3600)]
    pub history_retention_s: u64,

    /// Who may call the gRPC port: `required` (the default) accepts only the credentials
    /// below; `none` lets anyone who reaches the port call anything (development on a
    /// trusted host only; production mode refuses it).
    #[arg(long, env = "VIDEOCHAT_GRPC_AUTH", value_enum, default_value_t = GrpcAuth::Required)]
    pub grpc_auth: GrpcAuth,

    /// Bearer credentials gateways present (`authorization: Bearer …`), comma-separated:
    /// list the new one beside the old while rotating.
    #[arg(
        long,
        env = "VIDEOCHAT_GRPC_GATEWAY_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub grpc_gateway_tokens: Vec<Secret>,

    /// Bearer credentials internal services present, comma-separated (rotation as above).
    #[arg(
        long,
        env = "VIDEOCHAT_GRPC_SERVICE_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub grpc_service_tokens: Vec<Secret>,

    /// Internal services may also call the Handshake operations on behalf of users (any user:
    /// the service is trusted to name the actor). Off, only gateways may.
    #[arg(long, env = "VIDEOCHAT_GRPC_SERVICES_ACT_FOR_USERS", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub grpc_services_act_for_users: bool,

    /// Serve gRPC server reflection (v1 and v1alpha), without credentials, for tools such as
    /// grpcurl. Health is always served without credentials.
    #[arg(long, env = "VIDEOCHAT_GRPC_REFLECTION", default_value_t = true,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub grpc_reflection: bool,

    /// PEM certificate chain of the gRPC listener: with the key below, the port speaks TLS.
    #[arg(long, env = "VIDEOCHAT_GRPC_TLS_CERT_FILE")]
    pub grpc_tls_cert_file: Option<PathBuf>,

    /// PEM private key of the gRPC listener's certificate.
    #[arg(long, env = "VIDEOCHAT_GRPC_TLS_KEY_FILE")]
    pub grpc_tls_key_file: Option<PathBuf>,

    /// PEM CA certificate(s): with it, every gRPC client must present a certificate it signed
    /// (mutual TLS), health and reflection included.
    #[arg(long, env = "VIDEOCHAT_GRPC_TLS_CLIENT_CA_FILE")]
    pub grpc_tls_client_ca_file: Option<PathBuf>,

    /// The network between gateways, internal services and this port is private and encrypted
    /// by other means (a service mesh with mTLS, WireGuard): production mode then accepts plain
    /// HTTP/2 on a non-loopback address.
    #[arg(long, env = "VIDEOCHAT_GRPC_TRUST_NETWORK", default_value_t = false,
          num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub grpc_trust_network: bool,

    /// Most rings one user may have ringing at once (direct calls and invites); one more is
    /// refused with 10017.
    #[arg(
        long,
        env = "VIDEOCHAT_MAX_PENDING_RINGS_PER_USER",
        default_value_t = 20
    )]
    pub max_pending_rings_per_user: u32,

    /// Most invites into one videochat per minute; one more is refused with 10018.
    #[arg(
        long,
        env = "VIDEOCHAT_MAX_INVITES_PER_VIDEOCHAT_PER_MIN",
        default_value_t = 30
    )]
    pub max_invites_per_videochat_per_min: u32,

    /// Most sockets one user may hold across all gateways; one more is refused at the upgrade
    /// (HTTP 429 naming 10019). Each gateway also caps its own (`VIDEOCHAT_MAX_SOCKETS_PER_USER`).
    #[arg(
        long,
        env = "VIDEOCHAT_MAX_SOCKETS_PER_USER_CLUSTER",
        default_value_t = 50
    )]
    pub max_sockets_per_user_cluster: u32,

    #[command(flatten)]
    pub engines: EngineConfig,

    #[command(flatten)]
    pub webhooks: WebhookConfig,
}

/// Webhooks out (docs/webhooks.md): call-status events and the push hand-off. Checked at
/// start-up by [`crate::webhooks::WebhookSettings::from_config`].
#[derive(Clone, Debug, clap::Args)]
pub struct WebhookConfig {
    /// Endpoints that receive call-status webhooks (`call.requested`, …), comma-separated
    /// http:// or https:// URLs. Unset: no call-status webhooks, and nothing extra is written.
    #[arg(long, env = "VIDEOCHAT_WEBHOOK_URL", value_delimiter = ',')]
    pub webhook_url: Vec<String>,

    /// Only these call-status event types, comma-separated (e.g. `call.missed,call.accepted`);
    /// unset: all of them.
    #[arg(long, env = "VIDEOCHAT_WEBHOOK_EVENTS", value_delimiter = ',')]
    pub webhook_events: Vec<String>,

    /// The endpoint of the deployment's push sender: with it, a ring to a user with no live
    /// socket but a registered device rings (a `push.ring` webhook) instead of answering 10011.
    #[arg(long, env = "VIDEOCHAT_PUSH_WEBHOOK_URL")]
    pub push_webhook_url: Option<String>,

    /// The signing secret of every webhook, in Standard Webhooks form: `whsec_` and base64.
    #[arg(long, env = "VIDEOCHAT_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// How long a webhook is retried before it is marked failed, in seconds.
    #[arg(long, env = "VIDEOCHAT_WEBHOOK_MAX_AGE_S", default_value_t = 86_400)]
    pub webhook_max_age_s: u64,

    /// How long one delivery attempt may take, in milliseconds.
    #[arg(long, env = "VIDEOCHAT_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,

    /// The first retry's backoff ceiling, in milliseconds; it doubles per attempt.
    #[arg(
        long,
        env = "VIDEOCHAT_WEBHOOK_BACKOFF_MIN_MS",
        default_value_t = 5_000
    )]
    pub webhook_backoff_min_ms: u64,

    /// The largest backoff between two attempts, in milliseconds.
    #[arg(
        long,
        env = "VIDEOCHAT_WEBHOOK_BACKOFF_MAX_MS",
        default_value_t = 3_600_000
    )]
    pub webhook_backoff_max_ms: u64,

    /// Deliveries in flight at once per replica.
    #[arg(long, env = "VIDEOCHAT_WEBHOOK_CONCURRENCY", default_value_t = 32)]
    pub webhook_concurrency: usize,

    /// How often the dispatcher looks for due deliveries when nothing woke it, in milliseconds.
    #[arg(long, env = "VIDEOCHAT_WEBHOOK_POLL_MS", default_value_t = 1_000)]
    pub webhook_poll_ms: u64,

    /// How long failed webhook deliveries stay in the table for `RetryDeliveries`, in seconds
    /// (delivered ones are deleted at once).
    #[arg(long, env = "VIDEOCHAT_WEBHOOK_RETENTION_S", default_value_t = 604_800)]
    pub webhook_retention_s: u64,
}

/// Whether the gRPC port checks its callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GrpcAuth {
    /// Only callers with a configured credential, in their role.
    Required,
    /// Anyone who can reach the port, in every role (development only).
    None,
}

/// Shortest internal gRPC credential production mode accepts (as for the JWT secret: 256 bits).
pub const MIN_PRODUCTION_TOKEN_BYTES: usize = 32;

/// A credential read from the configuration: kept out of logs (`Debug` redacts it).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
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

    /// The limits the state machine enforces.
    pub fn limits(&self) -> Limits {
        Limits {
            max_pending_rings_per_user: self.max_pending_rings_per_user,
            max_invites_per_videochat_per_min: self.max_invites_per_videochat_per_min,
        }
    }

    /// Whether the gRPC listener speaks TLS (certificate and key configured).
    pub fn grpc_tls(&self) -> bool {
        self.grpc_tls_cert_file.is_some() && self.grpc_tls_key_file.is_some()
    }

    /// Some credential is configured (or checking is off): something besides health can call.
    pub fn grpc_credentials_configured(&self) -> bool {
        let set = |tokens: &[Secret]| tokens.iter().any(|t| !t.expose().is_empty());
        self.grpc_auth == GrpcAuth::None
            || set(&self.grpc_gateway_tokens)
            || set(&self.grpc_service_tokens)
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
        if self.grpc_auth == GrpcAuth::None {
            problems.push(UnsafeSetting::GrpcAuthOff);
        } else if !self.grpc_credentials_configured() {
            problems.push(UnsafeSetting::NoGrpcCredentials);
        }
        let short = self
            .grpc_gateway_tokens
            .iter()
            .chain(&self.grpc_service_tokens)
            .any(|t| !t.expose().is_empty() && t.expose().len() < MIN_PRODUCTION_TOKEN_BYTES);
        if short {
            problems.push(UnsafeSetting::ShortGrpcToken);
        }
        if !self.grpc_addr.ip().is_loopback() && !self.grpc_tls() && !self.grpc_trust_network {
            problems.push(UnsafeSetting::PlaintextGrpc(self.grpc_addr));
        }
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
    #[error(
        "VIDEOCHAT_GRPC_AUTH=none lets anyone who reaches the gRPC port act as any user, upsert \
         users and read every event: set it to required (the default) with \
         VIDEOCHAT_GRPC_GATEWAY_TOKENS / VIDEOCHAT_GRPC_SERVICE_TOKENS"
    )]
    GrpcAuthOff,
    #[error(
        "VIDEOCHAT_GRPC_GATEWAY_TOKENS and VIDEOCHAT_GRPC_SERVICE_TOKENS are both unset: no \
         gateway nor internal service could authenticate to the gRPC port; set the credentials \
         they present (docs/security.md, Internal gRPC authentication)"
    )]
    NoGrpcCredentials,
    #[error(
        "VIDEOCHAT_GRPC_GATEWAY_TOKENS/VIDEOCHAT_GRPC_SERVICE_TOKENS holds a credential shorter \
         than {MIN_PRODUCTION_TOKEN_BYTES} bytes: use random ones (openssl rand -base64 32)"
    )]
    ShortGrpcToken,
    #[error(
        "VIDEOCHAT_GRPC_ADDR={0} serves plain HTTP/2 to other hosts, so credentials and events \
         cross the network in clear: set VIDEOCHAT_GRPC_TLS_CERT_FILE and \
         VIDEOCHAT_GRPC_TLS_KEY_FILE (and VIDEOCHAT_GRPC_TLS_CLIENT_CA_FILE for mutual TLS), \
         bind a loopback address, or state an encrypted private network with \
         VIDEOCHAT_GRPC_TRUST_NETWORK=true"
    )]
    PlaintextGrpc(SocketAddr),
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
        let credentials = ["--grpc-gateway-tokens", "a-gateway-credential-of-32-bytes"];
        let problems = config(&credentials).production_problems();
        assert_eq!(problems, vec![UnsafeSetting::LivekitDevelopmentKeys]);
        assert!(problems[0].to_string().contains("LIVEKIT_API_SECRET"));
        let own = [
            "--grpc-gateway-tokens",
            "a-gateway-credential-of-32-bytes",
            "--livekit-api-key",
            "APIxyz",
            "--livekit-api-secret",
            "s3cr3t-of-our-own",
        ];
        assert_eq!(config(&own).production_problems(), vec![]);
        let off = [
            "--grpc-service-tokens",
            "a-service-credential-of-32-bytes",
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
    fn production_refuses_unauthenticated_or_plaintext_grpc_naming_the_setting() {
        let config = |args: &[&str]| {
            let safe = [
                "--livekit-api-key",
                "APIxyz",
                "--livekit-api-secret",
                "s3cr3t-of-our-own",
            ];
            Args::try_parse_from(
                std::iter::once("handshake")
                    .chain(safe)
                    .chain(args.iter().copied()),
            )
            .unwrap()
            .handshake
        };
        let token = "a-gateway-credential-of-32-bytes";
        let cases: &[(&[&str], UnsafeSetting, &str)] = &[
            (
                &[],
                UnsafeSetting::NoGrpcCredentials,
                "VIDEOCHAT_GRPC_GATEWAY_TOKENS",
            ),
            (
                &["--grpc-auth", "none"],
                UnsafeSetting::GrpcAuthOff,
                "VIDEOCHAT_GRPC_AUTH",
            ),
            (
                &[
                    "--grpc-gateway-tokens",
                    token,
                    "--grpc-service-tokens",
                    "short",
                ],
                UnsafeSetting::ShortGrpcToken,
                "VIDEOCHAT_GRPC_SERVICE_TOKENS",
            ),
            (
                &[
                    "--grpc-gateway-tokens",
                    token,
                    "--grpc-addr",
                    "0.0.0.0:50051",
                ],
                UnsafeSetting::PlaintextGrpc("0.0.0.0:50051".parse().unwrap()),
                "VIDEOCHAT_GRPC_TLS_CERT_FILE",
            ),
        ];
        for (args, expected, named) in cases {
            let problems = config(args).production_problems();
            assert_eq!(problems, vec![expected.clone()], "{args:?}");
            assert!(problems[0].to_string().contains(named), "{}", problems[0]);
        }
        for fine in [
            &["--grpc-gateway-tokens", token][..],
            &[
                "--grpc-service-tokens",
                token,
                "--grpc-addr",
                "0.0.0.0:50051",
                "--grpc-trust-network",
            ],
            &[
                "--grpc-gateway-tokens",
                token,
                "--grpc-addr",
                "0.0.0.0:50051",
                "--grpc-tls-cert-file",
                "/etc/vc/cert.pem",
                "--grpc-tls-key-file",
                "/etc/vc/key.pem",
            ],
        ] {
            assert_eq!(config(fine).production_problems(), vec![], "{fine:?}");
        }
    }

    #[test]
    fn credentials_never_reach_the_log() {
        let secret = Secret::from("s3cr3t".to_owned());
        assert_eq!(format!("{secret:?}"), "<redacted>");
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
