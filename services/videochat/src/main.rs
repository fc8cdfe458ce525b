//! `videochat`: a thin `main` over [`videochat::stack`].

use clap::Parser;
use tokio_util::sync::CancellationToken;
use videochat::cli::{Cli, Command};
use videochat::{client, production, stack, telemetry};

/// See the workspace `Cargo.toml` for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    videochat::allocator::configure();
    let cli = Cli::parse();
    let cli = match cli.command {
        // A user-facing command whose output is the point: no log set-up, its own exit codes.
        Command::Client(args) => std::process::exit(client::run(args).await),
        command => Cli { command, ..cli },
    };
    let service_name = match &cli.command {
        Command::Gateway(_) => "videochat-gateway",
        Command::Handshake(_) => "videochat-handshake",
        _ => "videochat",
    };
    let _telemetry = telemetry::init(service_name, &cli.log);
    // Not logged on its own: `token` prints its result on stdout, where the log goes too.
    let env = cli.deployment.env;
    if let Err(refused) = production::check_command(env, &cli.command) {
        tracing::error!(%refused, "not starting");
        return Err(refused.into());
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match cli.command {
        Command::Serve(args) => {
            tracing::info!(?env, gateway = ?args.gateway, handshake = ?args.handshake, "starting gateway + handshake service");
            let embedded = stack::Embedded::bind(args.gateway, args.handshake).await?;
            tracing::info!(ws = %format!("ws://{}/ws", embedded.bound.ws), grpc = %embedded.bound.grpc, metrics = %embedded.bound.metrics, "serving");
            embedded.run(shutdown).await
        }
        Command::Gateway(args) => {
            tracing::info!(?env, config = ?args.gateway, "starting gateway");
            stack::run_gateway(args.gateway, shutdown).await
        }
        Command::Handshake(args) => {
            tracing::info!(?env, config = ?args.handshake, "starting handshake service");
            stack::run_handshake(args.handshake, shutdown).await
        }
        Command::Migrate(args) => {
            let backend = videochat_handshake::store::migrate(&args.database_url).await?;
            tracing::info!(backend, "migrations applied");
            Ok(())
        }
        Command::Token(args) => {
            let token = videochat_gateway::auth::sign_dev_token(
                &args.secret,
                &args.user_id,
                args.name.as_deref(),
                args.ttl_s,
            )?;
            // The token is the command's output, for scripts: stdout, not the log.
            use std::io::Write;
            writeln!(std::io::stdout(), "{token}")?;
            Ok(())
        }
        Command::Client(_) => unreachable!("handled before telemetry set-up"),
    }
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM (what orchestrators send).
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
