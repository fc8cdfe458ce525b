//! `idle`: many authenticated sockets that do nothing, as most sockets of a signaling server do
//! most of the time. Measures how fast they connect and what each costs the server in memory.
//!
//! Each socket is a distinct user. They are opened `--concurrency` at a time from source
//! addresses 127.0.0.2 … 127.0.0.(1 + `--sources`) (one address has about 28,000 ephemeral
//! ports, and sockets a previous run left in TIME_WAIT still hold theirs). The connect rate is
//! opened sockets over the whole open phase. With `--server-pid`, the server's resident memory
//! (`VmRSS`) is read before the first connect and after the last one plus `--settle-ms`; their
//! difference over the sockets opened is the cost of one idle authenticated socket, which is only
//! meaningful on a fresh server process. The sockets then stay open `--hold-s`, a sample of them
//! must answer a WebSocket ping, and all are closed.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{Client, Connector};
use crate::stats::{Errors, Hist, Latency};

/// Longest the close phase may take, whatever happens.
const CLOSE_BUDGET: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// Sockets to open, one user each.
    #[arg(long, default_value_t = 15_000)]
    pub sockets: usize,
    /// Source addresses 127.0.0.2 … 127.0.0.(1 + N), round robin; 0 lets the kernel choose.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(0..=250))]
    pub sources: u8,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// The server process whose memory is measured.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Pause after the last connect before reading the server's memory, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub settle_ms: u64,
    /// How long the sockets stay open after the memory reading, in seconds.
    #[arg(long, default_value_t = 3)]
    pub hold_s: u64,
    /// Sockets, spread over the whole set, that must answer a ping before the close.
    #[arg(long, default_value_t = 200)]
    pub alive_sample: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IdleFigures {
    pub sockets: usize,
    pub opened: usize,
    pub failed: Errors,
    pub sources: u8,
    pub concurrency: usize,
    /// First connect started → last connect done, in seconds.
    pub open_s: f64,
    pub connects_per_s: f64,
    /// One connect: TCP, upgrade, authentication (and the Socket.IO namespace connect).
    pub connect_ms: Latency,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub kib_per_socket: Option<f64>,
    pub alive_checked: usize,
    pub alive_ok: usize,
    pub ping_ms: Latency,
    /// TCP listen-queue overflows on the whole machine during the open phase (`TcpExt:
    /// ListenOverflows`): a connect whose SYN was dropped is retried by the kernel after 1 s,
    /// which shows as a 1 s tail in `connect_ms`.
    #[serde(default)]
    pub listen_overflows: Option<u64>,
}

pub async fn run(connector: Arc<Connector>, args: &IdleArgs) -> anyhow::Result<IdleFigures> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be positive");
    let rss = |pid: Option<u32>| pid.map(rss_kib).transpose();
    let rss_before_kib = rss(args.server_pid)?;
    let sources: Vec<IpAddr> = (0..args.sources)
        .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + n)))
        .collect();

    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut connects = JoinSet::new();
    let mut clients = Vec::with_capacity(args.sockets);
    let mut failed = Errors::default();
    let mut connect_time = Hist::default();
    let mut take = |outcome: Result<(Duration, anyhow::Result<Client>), _>| match outcome {
        Ok((took, Ok(client))) => {
            connect_time.record(took);
            clients.push(client);
        }
        Ok((_, Err(error))) => failed.record(&error),
        Err(panic) => failed.record(&anyhow::Error::from(panic)),
    };
    let overflows_before = read_listen_overflows();
    let started = Instant::now();
    for index in 0..args.sockets {
        let permit = permits.clone().acquire_owned().await?;
        let connector = connector.clone();
        let source = (!sources.is_empty()).then(|| sources[index % sources.len()]);
        connects.spawn(async move {
            let user = connector.user("idle", index);
            let begun = Instant::now();
            let client = connector.connect(&user, source).await;
            drop(permit);
            (begun.elapsed(), client)
        });
        while let Some(done) = connects.try_join_next() {
            take(done);
        }
    }
    while let Some(done) = connects.join_next().await {
        take(done);
    }
    let open_s = started.elapsed().as_secs_f64();
    let listen_overflows = overflows_before
        .zip(read_listen_overflows())
        .map(|(before, after)| after.saturating_sub(before));
    let opened = clients.len();
    tracing::info!(opened, failed = failed.count, open_s, "sockets open");
    if opened == 0 {
        bail!("no socket opened: {:?}", failed.kinds);
    }

    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let rss_after_kib = rss(args.server_pid)?;
    tokio::time::sleep(Duration::from_secs(args.hold_s)).await;

    let step = (opened / args.alive_sample.clamp(1, opened)).max(1);
    let pings = futures_util::future::join_all(
        clients
            .iter_mut()
            .step_by(step)
            .take(args.alive_sample)
            .map(Client::ping),
    )
    .await;
    let mut ping_time = Hist::default();
    let alive_checked = pings.len();
    for took in pings.into_iter().flatten() {
        ping_time.record(took);
    }
    let alive_ok = usize::try_from(ping_time.summary().count).unwrap_or(usize::MAX);

    let closing = futures_util::stream::iter(clients).for_each_concurrent(512, Client::close);
    if tokio::time::timeout(CLOSE_BUDGET, closing).await.is_err() {
        tracing::warn!("closing the sockets took longer than {CLOSE_BUDGET:?}; dropping the rest");
    }

    let kib_per_socket = match (rss_before_kib, rss_after_kib) {
        (Some(before), Some(after)) => Some((after as f64 - before as f64) / opened as f64),
        _ => None,
    };
    Ok(IdleFigures {
        sockets: args.sockets,
        opened,
        failed,
        sources: args.sources,
        concurrency: args.concurrency,
        open_s,
        connects_per_s: opened as f64 / open_s,
        connect_ms: connect_time.summary(),
        rss_before_kib,
        rss_after_kib,
        kib_per_socket,
        alive_checked,
        alive_ok,
        ping_ms: ping_time.summary(),
        listen_overflows,
    })
}

/// The machine's `TcpExt: ListenOverflows` counter, from `/proc/net/netstat` (a line of names,
/// then a line of values).
fn read_listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next()?, tcp_ext.next()?);
    let column = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

/// The resident set of a process, from `/proc/PID/status`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

impl IdleFigures {
    pub fn human(&self) -> String {
        let memory = match (self.rss_before_kib, self.rss_after_kib, self.kib_per_socket) {
            (Some(before), Some(after), Some(per)) => format!(
                "server RSS {:.1} MiB → {:.1} MiB: {per:.2} KiB per idle socket\n",
                before as f64 / 1024.0,
                after as f64 / 1024.0
            ),
            _ => "server RSS not measured (no --server-pid)\n".to_owned(),
        };
        format!(
            "idle: {}/{} sockets open ({} failed) in {:.2} s from {} source addresses: \
             {:.0} connects/s\n{}listen-queue overflows on the machine while opening: {}\n{}\
             alive after hold: {}/{} answered a ping\n{}",
            self.opened,
            self.sockets,
            self.failed.count,
            self.open_s,
            self.sources,
            self.connects_per_s,
            self.connect_ms.line("connect (TCP + upgrade + auth)"),
            self.listen_overflows
                .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
            memory,
            self.alive_ok,
            self.alive_checked,
            self.ping_ms.line("ping → pong"),
        )
    }
}
