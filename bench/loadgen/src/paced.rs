//! `paced`: handshakes at a fixed rate, open loop. Handshake `i` is due at `start + i / rate`
//! whatever happened to the ones before it, so a slow server meets the same arrivals a fast one
//! does (no coordinated omission). Each handshake takes a free pair from a pool; every callee
//! has two sockets, like a phone and a laptop, so the run sees both ring and one stop ringing.
//!
//! When no pair is free at a handshake's due time, that is a schedule slip: the handshake starts
//! when one frees up, late, and its lateness is in `start_lag_ms`. A pool big enough that slips
//! stay at 0 is part of a valid run; the report says how many there were.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::client::Connector;
use crate::pairs::{self, Pair, Sample};
use crate::stats::{Errors, Hist, Latency};

/// Sockets per callee.
const CALLEE_SOCKETS: usize = 2;

#[derive(Debug, clap::Args)]
pub struct PacedArgs {
    /// Handshakes started per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Pairs in the pool (three sockets each: the caller, the callee twice).
    #[arg(long, default_value_t = 200)]
    pub pairs: usize,
    /// How long to keep starting handshakes, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Also write every handshake's timings to this CSV file (due time since the start, then
    /// each latency, in ms), to see when the slow ones happened: a tail that comes in bursts at
    /// a fixed period points at periodic work.
    #[arg(long)]
    pub samples: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PacedFigures {
    /// The rate asked for.
    pub rate: f64,
    pub pairs: usize,
    pub callee_sockets: usize,
    /// From the first due time to the last answer, in seconds.
    pub elapsed_s: f64,
    pub scheduled: u64,
    pub handshakes: u64,
    pub handshakes_per_s: f64,
    pub errors: Errors,
    /// Handshakes that found no free pair at their due time.
    pub schedule_slips: u64,
    /// Due time → request sent.
    pub start_lag_ms: Latency,
    pub latency_ms: PacedLatency,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PacedLatency {
    /// Request sent → its response.
    pub request: Latency,
    /// Request sent → the first callee socket rings.
    pub ring: Latency,
    /// Request sent → both callee sockets ring.
    pub ring_all: Latency,
    /// Accept sent → its response (the acceptor's credentials).
    pub accept: Latency,
    /// Accept sent → the caller has its credentials.
    pub credentials: Latency,
    /// Accept sent on callee socket 1 → `videochatAccepted` on callee socket 2.
    pub stop_ringing: Latency,
}

#[derive(Default)]
struct Stats {
    /// (due time since the start, the handshake's timings), when `--samples` asks for them.
    samples: Option<Vec<(Duration, Sample)>>,
    handshakes: u64,
    errors: Errors,
    start_lag: Hist,
    request: Hist,
    ring: Hist,
    ring_all: Hist,
    accept: Hist,
    credentials: Hist,
    stop_ringing: Hist,
}

pub async fn run(connector: Arc<Connector>, args: &PacedArgs) -> anyhow::Result<PacedFigures> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let pool = pairs::connect(&connector, args.pairs, CALLEE_SOCKETS).await?;
    let (free, mut next_free) = mpsc::channel::<Pair>(args.pairs.max(1));
    for pair in pool {
        free.try_send(pair)
            .expect("the channel holds the whole pool");
    }
    let stats = Arc::new(Mutex::new(Stats {
        samples: args.samples.as_ref().map(|_| Vec::new()),
        ..Stats::default()
    }));
    let mut slips = 0;
    let mut scheduled = 0;
    let started = tokio::time::Instant::now();
    let until = started + Duration::from_secs(args.duration_s);
    loop {
        let due = started + Duration::from_secs_f64(scheduled as f64 / args.rate);
        if due >= until {
            break;
        }
        tokio::time::sleep_until(due).await;
        let pair = match next_free.try_recv() {
            Ok(pair) => pair,
            Err(_) => {
                slips += 1;
                // Bounded: a pair comes back at the latest after its handshake's timeouts.
                match next_free.recv().await {
                    Some(pair) => pair,
                    None => break,
                }
            }
        };
        scheduled += 1;
        let lag = due.elapsed();
        let at = due - started;
        let (stats, free) = (stats.clone(), free.clone());
        tokio::spawn(async move {
            let mut pair = pair;
            let outcome = pair.handshake().await;
            {
                let mut stats = stats.lock().expect("stats lock");
                stats.start_lag.record(lag);
                if let (Some(samples), Ok(sample)) = (stats.samples.as_mut(), outcome.as_ref()) {
                    samples.push((at, sample.clone()));
                }
                record(&mut stats, outcome);
            }
            // Recorded first: the end of the run is "every pair back". The pool's channel holds
            // every pair, so this never waits.
            let _ = free.send(pair).await;
        });
    }
    // Wait for the handshakes in flight: every pair back in the pool.
    drop(free);
    for _ in 0..args.pairs {
        if next_free.recv().await.is_none() {
            break;
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let stats = std::mem::take(&mut *stats.lock().expect("stats lock"));
    if let (Some(path), Some(samples)) = (&args.samples, &stats.samples) {
        write_samples(path, samples)?;
    }
    Ok(PacedFigures {
        rate: args.rate,
        pairs: args.pairs,
        callee_sockets: CALLEE_SOCKETS,
        elapsed_s,
        scheduled,
        handshakes: stats.handshakes,
        handshakes_per_s: stats.handshakes as f64 / elapsed_s,
        errors: stats.errors,
        schedule_slips: slips,
        start_lag_ms: stats.start_lag.summary(),
        latency_ms: PacedLatency {
            request: stats.request.summary(),
            ring: stats.ring.summary(),
            ring_all: stats.ring_all.summary(),
            accept: stats.accept.summary(),
            credentials: stats.credentials.summary(),
            stop_ringing: stats.stop_ringing.summary(),
        },
    })
}

/// One CSV line per handshake, in due order.
fn write_samples(path: &std::path::Path, samples: &[(Duration, Sample)]) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut sorted: Vec<_> = samples.iter().collect();
    sorted.sort_by_key(|(at, _)| *at);
    let mut csv = String::from(
        "due_ms,request_ms,ring_ms,ring_all_ms,accept_ms,credentials_ms,stop_ringing_ms\n",
    );
    for (at, s) in sorted {
        let stop = s
            .stop_ringing
            .map(|d| format!("{:.3}", ms(d)))
            .unwrap_or_default();
        let _ = writeln!(
            csv,
            "{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{stop}",
            ms(*at),
            ms(s.request),
            ms(s.ring_first),
            ms(s.ring_all),
            ms(s.accept),
            ms(s.credentials),
        );
    }
    std::fs::write(path, csv)
        .map_err(|e| anyhow::anyhow!("cannot write samples to {}: {e}", path.display()))
}

fn record(stats: &mut Stats, outcome: anyhow::Result<Sample>) {
    match outcome {
        Ok(sample) => {
            stats.handshakes += 1;
            stats.request.record(sample.request);
            stats.ring.record(sample.ring_first);
            stats.ring_all.record(sample.ring_all);
            stats.accept.record(sample.accept);
            stats.credentials.record(sample.credentials);
            if let Some(stop) = sample.stop_ringing {
                stats.stop_ringing.record(stop);
            }
        }
        Err(error) => stats.errors.record(&error),
    }
}

impl PacedFigures {
    pub fn human(&self) -> String {
        let l = &self.latency_ms;
        format!(
            "paced: {:.0}/s asked over {} pairs (callee with {} sockets), {:.1} s: {} scheduled, \
             {} handshakes ({:.1}/s), {} errors, {} schedule slips\n{}{}{}{}{}{}{}",
            self.rate,
            self.pairs,
            self.callee_sockets,
            self.elapsed_s,
            self.scheduled,
            self.handshakes,
            self.handshakes_per_s,
            self.errors.count,
            self.schedule_slips,
            self.start_lag_ms.line("due → request sent"),
            l.request.line("request → response"),
            l.ring.line("request → first callee socket rings"),
            l.ring_all.line("request → both callee sockets ring"),
            l.accept.line("accept → response"),
            l.credentials.line("accept → caller has credentials"),
            l.stop_ringing.line("accept → other callee socket stops"),
        )
    }
}
