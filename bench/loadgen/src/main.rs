//! `videochat-loadgen`: the load generator behind `just bench` (docs/benchmarks.md).
//!
//! Scenarios, each bounded in time: `flat` (pairs calling and answering flat out), `paced`
//! (handshakes at a fixed rate, callees with two sockets), `idle` (many authenticated sockets
//! doing nothing: connect rate and server memory per socket). Each speaks our WebSocket frames or
//! Socket.IO (`--protocol`), so the same scenario drives us and the Socket.IO peer of
//! `bench/socketio-peer`. `summary` puts the JSON reports of one bench run side by side.
//!
//! Where to look: [`protocol`] the two wire protocols, [`client`] one timestamping socket,
//! [`pairs`] one handshake, [`report`] the JSON and the table.

mod client;
mod engineio;
mod flat;
mod idle;
mod paced;
mod pairs;
mod protocol;
mod report;
mod sink;
mod stats;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use client::Connector;
use protocol::Protocol;
use report::{Figures, Report};

#[derive(Debug, Parser)]
#[command(about = "Load generator for videochat-handshake (and its Socket.IO peer)")]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Wire protocol: our WebSocket frames, or Socket.IO for the peer.
    #[arg(long, global = true, value_enum, default_value_t = Protocol::Videochat)]
    protocol: Protocol,
    /// Server URL [default: ws://127.0.0.1:8080/ws, or the peer's
    /// ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket].
    #[arg(long, global = true)]
    url: Option<String>,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, global = true, env = "VIDEOCHAT_JWT_SECRET", hide_env_values = true,
          default_value = videochat_gateway::config::DEV_JWT_SECRET)]
    secret: String,
    /// Longest wait for any one connect, answer or event, in milliseconds.
    #[arg(long, global = true, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Names the server in the JSON (e.g. ours-sqlite, peer-postgres).
    #[arg(long, global = true, default_value = "run")]
    label: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pairs calling and answering back to back: throughput and latency.
    Flat(flat::FlatArgs),
    /// Handshakes at a fixed rate, open loop, callees with two sockets: ring, accept and
    /// stop-ringing latency.
    Paced(paced::PacedArgs),
    /// Many idle authenticated sockets: connect rate and server memory per socket.
    Idle(idle::IdleArgs),
    /// The JSON reports of one bench run as one table and one JSON document.
    Summary(report::SummaryArgs),
    /// A webhook endpoint answering 204 to everything (the service with webhooks on).
    Sink(sink::SinkArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    if let Command::Summary(args) = &cli.command {
        let table = report::summary(args)?;
        std::io::stdout().write_all(table.as_bytes())?;
        return Ok(());
    }
    if let Command::Sink(args) = &cli.command {
        // One thread: the sink stands in for a receiver on another machine, and on this one
        // every cycle it spends is taken from the service it measures (docs/benchmarks.md). On
        // one thread a request is read and answered without waking another (a multi-threaded
        // runtime spread the connections over two workers that woke each other).
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(sink::run(args));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(drive(&cli))
}

/// The load-generating commands, on a multi-threaded runtime.
async fn drive(cli: &Cli) -> anyhow::Result<()> {
    let common = &cli.common;

    let url = common
        .url
        .clone()
        .unwrap_or_else(|| common.protocol.default_url().to_owned());
    let connector = Arc::new(
        Connector::new(
            common.protocol,
            &url,
            &common.secret,
            Duration::from_millis(common.timeout_ms),
        )
        .await?,
    );
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    let figures = match &cli.command {
        Command::Flat(args) => Figures::Flat(flat::run(connector, args).await?),
        Command::Paced(args) => Figures::Paced(paced::run(connector, args).await?),
        Command::Idle(args) => Figures::Idle(idle::run(connector, args).await?),
        Command::Summary(_) | Command::Sink(_) => unreachable!("handled above"),
    };
    let report = Report {
        label: common.label.clone(),
        protocol: common.protocol,
        url,
        started_unix_ms,
        figures,
    };
    std::io::stdout().write_all(
        format!(
            "== {} ({:?})\n{}",
            report.label,
            report.protocol,
            report.figures.human()
        )
        .as_bytes(),
    )?;
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match &report.figures {
        Figures::Flat(f) if f.handshakes == 0 => bail!("no handshake completed"),
        Figures::Paced(f) if f.handshakes == 0 => bail!("no handshake completed"),
        _ => Ok(()),
    }
}
