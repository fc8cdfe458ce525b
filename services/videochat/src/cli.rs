//! The command line: one binary, one subcommand per piece.

use clap::{Args, Parser, Subcommand};
use videochat_gateway::GatewayConfig;
use videochat_handshake::HandshakeConfig;

use crate::production::Environment;

#[derive(Debug, Parser)]
#[command(
    name = "videochat",
    version,
    about = "Rings people for a video call and hands every side what it needs to join."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogConfig,
    #[command(flatten)]
    pub deployment: DeploymentConfig,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up; size is irrelevant
pub enum Command {
    /// Gateway and handshake service in one process (real gRPC between them on loopback).
    Serve(ServeArgs),
    /// The WebSocket gateway alone, in front of a handshake service.
    Gateway(GatewayArgs),
    /// The handshake service alone (one replica).
    Handshake(HandshakeArgs),
    /// Applies database migrations and exits.
    Migrate(MigrateArgs),
    /// Prints a signed development token for a user, to connect at once.
    Token(TokenArgs),
    /// A WebSocket client: call, listen, accept, decline, invite, merge.
    Client(crate::client::ClientArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub gateway: GatewayConfig,
    #[command(flatten)]
    pub handshake: HandshakeConfig,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub gateway: GatewayConfig,
}

#[derive(Debug, Args)]
pub struct HandshakeArgs {
    #[command(flatten)]
    pub handshake: HandshakeConfig,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// `postgres://…` or `sqlite://…`.
    #[arg(long, env = "DATABASE_URL", default_value = videochat_handshake::config::DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (the token's `sub`).
    pub user_id: String,
    /// Display name, "First Last" (becomes given_name/family_name).
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    pub ttl_s: u64,
    /// The gateway's HS256 secret.
    #[arg(long, env = "VIDEOCHAT_JWT_SECRET", default_value = videochat_gateway::config::DEV_JWT_SECRET, hide_env_values = true)]
    pub secret: String,
}

/// Settings that apply to every piece the process runs.
#[derive(Debug, Clone, Args)]
pub struct DeploymentConfig {
    /// `development` or `production`: production refuses to start with unsafe settings
    /// (development secrets, tokens without expiry, plain ws:// exposed, any origin…); see
    /// docs/security.md.
    #[arg(
        long = "env",
        global = true,
        env = "VIDEOCHAT_ENV",
        value_enum,
        default_value_t = Environment::Development
    )]
    pub env: Environment,
}

#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// `text` or `json`.
    #[arg(
        long,
        global = true,
        env = "VIDEOCHAT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: String,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}
