//! `flat`: handshakes flat out. Each of `--pairs` pairs runs handshakes back to back (a closed
//! loop) for `--duration-s`; throughput is what the server sustains with that many in flight.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::client::Connector;
use crate::pairs::{self, Pair};
use crate::stats::{Errors, Hist, Latency};

#[derive(Debug, clap::Args)]
pub struct FlatArgs {
    /// Caller/callee pairs running at once (one socket each).
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FlatFigures {
    pub pairs: usize,
    /// From the first request to the last answer, in seconds.
    pub elapsed_s: f64,
    pub handshakes: u64,
    pub handshakes_per_s: f64,
    pub errors: Errors,
    pub latency_ms: FlatLatency,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FlatLatency {
    /// Request sent → its response.
    pub request: Latency,
    /// Request sent → the callee rings.
    pub ring: Latency,
    /// Accept sent → its response.
    pub accept: Latency,
    /// Accept sent → the caller has its credentials.
    pub credentials: Latency,
}

#[derive(Default)]
struct Stats {
    handshakes: u64,
    errors: Errors,
    request: Hist,
    ring: Hist,
    accept: Hist,
    credentials: Hist,
}

pub async fn run(connector: Arc<Connector>, args: &FlatArgs) -> anyhow::Result<FlatFigures> {
    let pairs = pairs::connect(&connector, args.pairs, 1).await?;
    let stats = Arc::new(Mutex::new(Stats::default()));
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration_s);
    let mut tasks = JoinSet::new();
    for pair in pairs {
        tasks.spawn(run_pair(pair, stats.clone(), until));
    }
    while tasks.join_next().await.is_some() {}
    let elapsed_s = started.elapsed().as_secs_f64();
    let stats = std::mem::take(&mut *stats.lock().expect("stats lock"));
    Ok(FlatFigures {
        pairs: args.pairs,
        elapsed_s,
        handshakes: stats.handshakes,
        handshakes_per_s: stats.handshakes as f64 / elapsed_s,
        errors: stats.errors,
        latency_ms: FlatLatency {
            request: stats.request.summary(),
            ring: stats.ring.summary(),
            accept: stats.accept.summary(),
            credentials: stats.credentials.summary(),
        },
    })
}

async fn run_pair(mut pair: Pair, stats: Arc<Mutex<Stats>>, until: Instant) {
    while Instant::now() < until {
        let outcome = pair.handshake().await;
        let mut stats = stats.lock().expect("stats lock");
        match outcome {
            Ok(sample) => {
                stats.handshakes += 1;
                stats.request.record(sample.request);
                stats.ring.record(sample.ring_first);
                stats.accept.record(sample.accept);
                stats.credentials.record(sample.credentials);
            }
            Err(error) => stats.errors.record(&error),
        }
    }
}

impl FlatFigures {
    pub fn human(&self) -> String {
        let l = &self.latency_ms;
        format!(
            "flat: {} pairs, {:.1} s: {} handshakes ({:.1}/s), {} errors\n{}{}{}{}",
            self.pairs,
            self.elapsed_s,
            self.handshakes,
            self.handshakes_per_s,
            self.errors.count,
            l.request.line("request → response"),
            l.ring.line("request → callee rings"),
            l.accept.line("accept → response"),
            l.credentials.line("accept → caller has credentials"),
        )
    }
}
