//! `videochat-loadgen`: drives a running gateway with pairs of users. In each pair the caller
//! rings the callee, the callee's socket waits for the ring and accepts, the caller waits for its
//! credentials; then again, until the time is up. Prints throughput and latency percentiles.
//!
//! Every loop is bounded by `--duration-s` and every wait by `--timeout-ms`; it only ever talks to
//! the URL it is given (loopback in `just bench`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(about = "Load generator for videochat-handshake")]
struct Args {
    /// Gateway WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// HS256 secret the gateway verifies tokens with.
    #[arg(long, env = "VIDEOCHAT_JWT_SECRET", default_value = videochat_gateway::config::DEV_JWT_SECRET)]
    secret: String,
    /// Caller/callee pairs running at once (2 sockets each).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Longest wait for any one answer or event, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
}

#[derive(Default)]
struct Stats {
    handshakes: u64,
    errors: u64,
    request_rtt: Option<Histogram<u64>>,
    ring: Option<Histogram<u64>>,
    accept_rtt: Option<Histogram<u64>>,
    credentials: Option<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Socket {
    ws: Ws,
    timeout: Duration,
    next: u64,
    /// Event ids are idempotency keys: unique per run, or a rerun would replay old answers.
    run: String,
}

impl Socket {
    async fn connect(args: &Args, user: &str, run: &str) -> anyhow::Result<Self> {
        let token = videochat_gateway::auth::sign_dev_token(&args.secret, user, Some(user), 3600)?;
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("{}?access_token={token}", args.url))
                .await
                .with_context(|| format!("connecting {user}"))?;
        Ok(Self {
            ws,
            timeout: Duration::from_millis(args.timeout_ms),
            next: 0,
            run: run.to_owned(),
        })
    }

    async fn send(&mut self, kind: &str, data: Value) -> anyhow::Result<String> {
        self.next += 1;
        let id = format!("lg-{}-{}", self.run, self.next);
        let frame = json!({ "type": kind, "data": data, "event": { "id": id } });
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await?;
        Ok(id)
    }

    /// The next text frame matching `want`; other frames are skipped.
    async fn wait(&mut self, want: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .context("timed out")?
                .context("socket closed")??;
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(text.as_str())?;
                if want(&frame) {
                    if frame["error"]["status"] == true {
                        bail!("error answer: {}", frame["error"]);
                    }
                    return Ok(frame);
                }
            }
        }
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

async fn run_pair(
    args: Arc<Args>,
    run: Arc<str>,
    index: usize,
    stats: Arc<Mutex<Stats>>,
    until: Instant,
) -> anyhow::Result<()> {
    // Users of their own per run: rings a previous run left pending do not interfere.
    let caller_id = format!("lg-{run}-caller-{index}");
    let callee_id = format!("lg-{run}-callee-{index}");
    let mut callee = Socket::connect(&args, &callee_id, &run).await?;
    let mut caller = Socket::connect(&args, &caller_id, &run).await?;
    while Instant::now() < until {
        let started = Instant::now();
        let outcome: anyhow::Result<(u64, u64, u64, u64)> = async {
            let id = caller
                .send(
                    "videochat:requestDirectVideochat",
                    json!({ "targetUser": callee_id }),
                )
                .await?;
            let response = caller.wait(|f| f["event"]["id"] == id.as_str()).await?;
            let request_rtt = micros(started);
            let ring_id = response["data"]["videochatRequestId"].clone();
            callee
                .wait(|f| {
                    f["type"] == "videochat:videochatRequested"
                        && f["data"]["videochatRequestId"] == ring_id
                })
                .await?;
            let ring = micros(started);
            let accept_started = Instant::now();
            let id = callee
                .send(
                    "videochat:acceptVideochatRequest",
                    json!({ "videochatRequestId": ring_id }),
                )
                .await?;
            callee.wait(|f| f["event"]["id"] == id.as_str()).await?;
            let accept_rtt = micros(accept_started);
            caller
                .wait(|f| f["type"] == "videochat:directVideochatRequestAccepted")
                .await?;
            let credentials = micros(accept_started);
            Ok((request_rtt, ring, accept_rtt, credentials))
        }
        .await;
        let mut stats = stats.lock().await;
        match outcome {
            Ok((request_rtt, ring, accept_rtt, credentials)) => {
                stats.handshakes += 1;
                let _ = stats
                    .request_rtt
                    .get_or_insert_with(histogram)
                    .record(request_rtt);
                let _ = stats.ring.get_or_insert_with(histogram).record(ring);
                let _ = stats
                    .accept_rtt
                    .get_or_insert_with(histogram)
                    .record(accept_rtt);
                let _ = stats
                    .credentials
                    .get_or_insert_with(histogram)
                    .record(credentials);
            }
            Err(error) => {
                stats.errors += 1;
                if stats.errors <= 5 {
                    eprintln!("pair {index}: {error:#}");
                }
            }
        }
    }
    Ok(())
}

fn line(name: &str, h: &Option<Histogram<u64>>) -> String {
    match h {
        Some(h) => format!(
            "{name:<34} p50 {:>8.2} ms   p95 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
            h.value_at_quantile(0.50) as f64 / 1000.0,
            h.value_at_quantile(0.95) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
        ),
        None => format!("{name:<34} no samples"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let stats = Arc::new(Mutex::new(Stats::default()));
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration_s);
    let run: Arc<str> = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default()
    )
    .into();
    let mut tasks = Vec::new();
    for index in 0..args.pairs {
        tasks.push(tokio::spawn(run_pair(
            args.clone(),
            run.clone(),
            index,
            stats.clone(),
            until,
        )));
    }
    let mut failed_pairs = 0;
    for task in tasks {
        if let Ok(Err(error)) | Err(error) = task.await.map_err(anyhow::Error::from) {
            failed_pairs += 1;
            eprintln!("pair failed: {error:#}");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = stats.lock().await;
    let mut out = String::new();
    out.push_str(&format!(
        "pairs {} ({} sockets), {:.1} s: {} handshakes ({:.1}/s, {:.1} frames/s), {} errors, {} pairs failed to start\n",
        args.pairs,
        args.pairs * 2,
        elapsed,
        stats.handshakes,
        stats.handshakes as f64 / elapsed,
        stats.handshakes as f64 * 2.0 / elapsed,
        stats.errors,
        failed_pairs,
    ));
    out.push_str(&line("request → response", &stats.request_rtt));
    out.push('\n');
    out.push_str(&line("request → callee rings", &stats.ring));
    out.push('\n');
    out.push_str(&line("accept → response", &stats.accept_rtt));
    out.push('\n');
    out.push_str(&line("accept → caller has credentials", &stats.credentials));
    out.push('\n');
    use std::io::Write;
    std::io::stdout().write_all(out.as_bytes())?;
    if stats.handshakes == 0 {
        bail!("no handshake completed");
    }
    Ok(())
}
