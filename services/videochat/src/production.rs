//! `VIDEOCHAT_ENV`: `development` (the default) or `production`, and the start-up check that
//! production mode runs for `serve`, `gateway` and `handshake`.
//!
//! Development keeps every default that makes a first run easy (the published JWT secret, any
//! browser origin, LiveKit's dev keys) and only warns. Production refuses to start while any
//! setting would let an outsider in, and names each one: the checks live beside the settings
//! they read ([`GatewayConfig::production_problems`], [`HandshakeConfig::production_problems`]);
//! this module only gathers them.

use videochat_gateway::GatewayConfig;
use videochat_handshake::HandshakeConfig;

use crate::cli::Command;

/// Which rules the process starts under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Environment {
    /// Convenient defaults; unsafe ones are logged as warnings.
    #[default]
    Development,
    /// Refuses to start with any unsafe setting.
    Production,
}

/// One unsafe setting, from whichever piece owns it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Gateway(#[from] videochat_gateway::config::UnsafeSetting),
    #[error(transparent)]
    Handshake(#[from] videochat_handshake::config::UnsafeSetting),
}

/// Production mode's refusal to start, listing every problem at once (so an operator fixes
/// them in one go rather than one restart each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("VIDEOCHAT_ENV=production refuses to start:{}", list(.problems))]
pub struct Refused {
    pub problems: Vec<Problem>,
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

/// Checks the pieces a command runs. Development mode always passes.
pub fn check(
    env: Environment,
    gateway: Option<&GatewayConfig>,
    handshake: Option<&HandshakeConfig>,
) -> Result<(), Refused> {
    if env == Environment::Development {
        return Ok(());
    }
    let problems: Vec<Problem> = gateway
        .map(GatewayConfig::production_problems)
        .unwrap_or_default()
        .into_iter()
        .map(Problem::from)
        .chain(
            handshake
                .map(HandshakeConfig::production_problems)
                .unwrap_or_default()
                .into_iter()
                .map(Problem::from),
        )
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Refused { problems })
    }
}

/// The check for one command line: the pieces that command starts.
pub fn check_command(env: Environment, command: &Command) -> Result<(), Refused> {
    match command {
        Command::Serve(args) => {
            // As `serve` will run them: with the embedded gateway's own gRPC credential.
            let (gateway, handshake) =
                crate::stack::embed(args.gateway.clone(), args.handshake.clone());
            check(env, Some(&gateway), Some(&handshake))
        }
        Command::Gateway(args) => check(env, Some(&args.gateway), None),
        Command::Handshake(args) => check(env, None, Some(&args.handshake)),
        Command::Migrate(_) | Command::Token(_) | Command::Client(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn refusal(args: &[&str]) -> Result<(), Refused> {
        let cli =
            Cli::try_parse_from(std::iter::once("videochat").chain(args.iter().copied())).unwrap();
        check_command(cli.deployment.env, &cli.command)
    }

    const SAFE_GATEWAY: &[&str] = &[
        "--jwt-secret",
        "0123456789abcdef0123456789abcdef",
        "--allowed-origins",
        "https://app.example.test",
    ];
    const GATEWAY_CREDENTIAL: &[&str] = &["--grpc-token", "a-gateway-credential-of-32-bytes"];
    const SAFE_HANDSHAKE: &[&str] = &[
        "--livekit-api-key",
        "APIxyz",
        "--livekit-api-secret",
        "a-secret-of-our-own",
    ];
    const SERVICE_CREDENTIALS: &[&str] =
        &["--grpc-gateway-tokens", "a-gateway-credential-of-32-bytes"];

    #[test]
    fn development_starts_with_the_defaults() {
        assert_eq!(refusal(&["serve"]), Ok(()));
        assert_eq!(refusal(&["--env", "development", "gateway"]), Ok(()));
    }

    #[test]
    fn production_refuses_the_defaults_listing_every_setting() {
        let error = refusal(&["--env", "production", "serve"]).unwrap_err();
        let message = error.to_string();
        for setting in [
            "VIDEOCHAT_ENV=production",
            "VIDEOCHAT_JWT_SECRET",
            "VIDEOCHAT_ALLOWED_ORIGINS",
            "LIVEKIT_API_SECRET",
        ] {
            assert!(message.contains(setting), "{message}");
        }
        assert_eq!(error.problems.len(), 3, "{message}");
    }

    #[test]
    fn each_command_is_checked_for_the_pieces_it_runs() {
        let gateway: Vec<&str> = ["--env", "production", "gateway"]
            .iter()
            .chain(SAFE_GATEWAY)
            .chain(GATEWAY_CREDENTIAL)
            .copied()
            .collect();
        assert_eq!(refusal(&gateway), Ok(()));
        let handshake: Vec<&str> = ["--env", "production", "handshake"]
            .iter()
            .chain(SAFE_HANDSHAKE)
            .chain(SERVICE_CREDENTIALS)
            .copied()
            .collect();
        assert_eq!(refusal(&handshake), Ok(()));
        let serve: Vec<&str> = ["serve", "--env", "production"]
            .iter()
            .chain(SAFE_GATEWAY)
            .chain(SAFE_HANDSHAKE)
            .copied()
            .collect();
        assert_eq!(refusal(&serve), Ok(()));
        let mut unsafe_serve = serve.clone();
        unsafe_serve.extend(["--ws-addr", "0.0.0.0:8080", "--jwt-allow-no-exp"]);
        let message = refusal(&unsafe_serve).unwrap_err().to_string();
        assert!(message.contains("VIDEOCHAT_TRUST_PROXY_TLS"), "{message}");
        assert!(message.contains("VIDEOCHAT_JWT_ALLOW_NO_EXP"), "{message}");
        // The handshake command does not look at gateway settings, nor the reverse.
        assert_eq!(
            refusal(&[
                "--env",
                "production",
                "handshake",
                "--livekit-api-key",
                "k",
                "--livekit-api-secret",
                "s2",
                "--grpc-service-tokens",
                "a-service-credential-of-32-bytes",
            ]),
            Ok(())
        );
        // `serve` needs no gRPC credential of its own (it makes one), standalone pieces do.
        let message = refusal(&["--env", "production", "handshake"])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("VIDEOCHAT_GRPC_GATEWAY_TOKENS"),
            "{message}"
        );
        let message = refusal(&["--env", "production", "gateway"])
            .unwrap_err()
            .to_string();
        assert!(message.contains("VIDEOCHAT_GRPC_TOKEN"), "{message}");
        assert_eq!(refusal(&["--env", "production", "migrate"]), Ok(()));
    }
}
