//! Many replicas, nothing lost: a gateway that knows several handshake replicas keeps
//! answering while they are killed (`SIGKILL`, not a drain) and come back. Every handshake
//! started completes, none is answered 1004; a replica kill costs latency only.
//!
//! The replicas are real `videochat handshake` processes (so a kill is a kill: their sockets
//! close the way a crashed pod's do), over one fresh Postgres database; the gateway runs in the
//! test. `cargo test -p videochat --test failover -- --nocapture` prints the measured figures
//! (docs/operations.md, "Failure costs (measured)").

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::{free_port, spawn_replica};
use common::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::Child;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use videochat_handshake::{Listeners, Replica};

/// A `videochat handshake` process on a port of its own.
struct ReplicaProcess {
    addr: SocketAddr,
    child: Child,
}

impl ReplicaProcess {
    /// Starts a replica on `addr` (a free port if `None`) and waits until it accepts.
    async fn start(database_url: &str, addr: Option<SocketAddr>) -> Self {
        let addr = match addr {
            Some(addr) => addr,
            None => free_port().await,
        };
        let child = spawn_replica(database_url, addr, &[]).await;
        Self { addr, child }
    }

    /// `SIGKILL`: no drain, no goodbye.
    async fn kill(mut self) -> SocketAddr {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
        self.addr
    }
}

struct Gateway {
    stop: CancellationToken,
    task: JoinHandle<()>,
    ws: String,
    http: SocketAddr,
}

impl Gateway {
    /// A gateway whose `VIDEOCHAT_HANDSHAKE_URL` is `handshake_url`, ready.
    async fn start(handshake_url: String) -> Self {
        let (mut config, _) = configs();
        config.handshake_url = handshake_url;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            videochat_gateway::run(config, listener, videochat::telemetry::prometheus(), token)
                .await
                .expect("gateway ran");
        });
        until_ready(addr).await;
        Self {
            stop,
            task,
            ws: format!("ws://{addr}/ws"),
            http: addr,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn connect(url: &str, user: &str) -> Client {
    Client::connect(url, user, &TestApp::token(user)).await
}

/// One handshake as a user sees it: when it started (from the test's start), how long the
/// caller waited for the answer to its request, and how long until both sides had seen its end.
#[derive(Debug, Clone, Copy)]
struct Timing {
    started: Duration,
    answered: Duration,
    completed: Duration,
}

/// A handshake that did not go through: the frame that said so.
#[derive(Debug)]
struct Failure {
    started: Duration,
    frame: Value,
}

/// `caller` rings `callee`, who declines; both see every frame. Rounds until `stop`.
async fn handshakes(
    mut caller: Client,
    mut callee: Client,
    epoch: Instant,
    stop: CancellationToken,
) -> (Vec<Timing>, Vec<Failure>) {
    let mut timings = Vec::new();
    let mut failures = Vec::new();
    while !stop.is_cancelled() {
        let start = Instant::now();
        let started = start - epoch;
        let response = caller
            .request(
                "videochat:requestDirectVideochat",
                json!({ "targetUser": callee.user }),
            )
            .await;
        let answered = start.elapsed();
        if response["error"]["status"] != false {
            failures.push(Failure {
                started,
                frame: response,
            });
            continue;
        }
        let ring = response["data"]["videochatRequestId"].clone();
        assert_eq!(
            callee.event(REQUESTED).await["data"]["videochatRequestId"],
            ring
        );
        let response = callee
            .request(
                "videochat:declineVideochatRequest",
                json!({ "videochatRequestId": ring }),
            )
            .await;
        if response["error"]["status"] != false {
            failures.push(Failure {
                started,
                frame: response,
            });
            continue;
        }
        let declined = caller.event(DECLINED).await;
        assert_eq!(declined["data"]["videochatRequestId"], ring);
        assert_eq!(declined["data"]["reason"], "declined");
        timings.push(Timing {
            started,
            answered,
            completed: start.elapsed(),
        });
    }
    (timings, failures)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Prints p50/p99/max of the answer and completion times of the handshakes under way at some
/// moment of `window` (`overlapping`), or of those entirely within it.
fn report(
    label: &str,
    timings: &[Timing],
    window: std::ops::Range<Duration>,
    overlapping: bool,
) -> Duration {
    let picked: Vec<&Timing> = timings
        .iter()
        .filter(|t| {
            let ended = t.started + t.completed;
            if overlapping {
                t.started < window.end && ended >= window.start
            } else {
                window.start <= t.started && ended < window.end
            }
        })
        .collect();
    let mut answered: Vec<Duration> = picked.iter().map(|t| t.answered).collect();
    let mut completed: Vec<Duration> = picked.iter().map(|t| t.completed).collect();
    answered.sort_unstable();
    completed.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "failover: {label:<36} {:>4} handshakes | answer p50 {:>6.1} ms p99 {:>6.1} ms max {:>6.1} ms | complete p50 {:>6.1} ms p99 {:>6.1} ms max {:>6.1} ms",
        picked.len(),
        ms(percentile(&answered, 0.5)),
        ms(percentile(&answered, 0.99)),
        ms(answered.last().copied().unwrap_or_default()),
        ms(percentile(&completed, 0.5)),
        ms(percentile(&completed, 0.99)),
        ms(completed.last().copied().unwrap_or_default()),
    );
    completed.last().copied().unwrap_or_default()
}

/// Two replicas behind one gateway, four caller/callee pairs ringing and declining without
/// pause. Replica one is killed, comes back on its address, then replica two is killed: the
/// gateway's event stream is certainly on a killed replica once, and a returning replica is
/// taken back. No request is answered with an error and every handshake completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replicas_cost_latency_not_errors() {
    const PAIRS: usize = 4;
    const PHASE: Duration = Duration::from_secs(2);
    let db = TestDb::new(Backend::Postgres).await;
    let one = ReplicaProcess::start(&db.url, None).await;
    let two = ReplicaProcess::start(&db.url, None).await;
    let gateway = Gateway::start(format!("http://{},http://{}", one.addr, two.addr)).await;

    let epoch = Instant::now();
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for i in 0..PAIRS {
        let caller = connect(&gateway.ws, &format!("caller-{i}")).await;
        let callee = connect(&gateway.ws, &format!("callee-{i}")).await;
        workers.push(tokio::spawn(handshakes(
            caller,
            callee,
            epoch,
            stop.clone(),
        )));
    }

    // How long the gateway says it is not ready (its event stream detached), in all.
    let not_ready = tokio::spawn({
        let stop = stop.clone();
        let http = gateway.http;
        async move {
            let mut total = Duration::ZERO;
            while !stop.is_cancelled() {
                let asked = Instant::now();
                let ready = http_get(http, "/readyz").await.map(|(s, _)| s) == Some(200);
                tokio::time::sleep(Duration::from_millis(5)).await;
                if !ready {
                    total += asked.elapsed();
                }
            }
            total
        }
    });

    tokio::time::sleep_until(epoch + PHASE).await;
    let first_kill = epoch.elapsed();
    let one_addr = one.kill().await;
    tokio::time::sleep_until(epoch + 2 * PHASE).await;
    let one = ReplicaProcess::start(&db.url, Some(one_addr)).await;
    let back = epoch.elapsed();
    tokio::time::sleep_until(epoch + 3 * PHASE).await;
    let second_kill = epoch.elapsed();
    let _two_addr = two.kill().await;
    tokio::time::sleep_until(epoch + 4 * PHASE).await;
    stop.cancel();

    let mut timings = Vec::new();
    let mut failures = Vec::new();
    for worker in workers {
        let (t, f) = worker.await.expect("worker ran");
        timings.extend(t);
        failures.extend(f);
    }
    timings.sort_by_key(|t| t.started);
    let not_ready = not_ready.await.expect("readiness watcher");
    let second = Duration::from_secs(1);
    report(
        "before any kill",
        &timings,
        Duration::ZERO..first_kill,
        false,
    );
    let worst_first = report(
        "under way in the second after kill 1",
        &timings,
        first_kill..first_kill + second,
        true,
    );
    report(
        "replica 1 back, before kill 2",
        &timings,
        back..second_kill,
        false,
    );
    let worst_second = report(
        "under way in the second after kill 2",
        &timings,
        second_kill..second_kill + second,
        true,
    );
    report(
        "whole run",
        &timings,
        Duration::ZERO..epoch.elapsed() + second,
        false,
    );
    eprintln!(
        "failover: {} handshakes completed, {} failed",
        timings.len(),
        failures.len()
    );
    let retries = local_metric("videochat_gateway_rpc_retries_total", "");
    eprintln!("failover: {retries} calls retried on another replica");
    eprintln!("failover: gateway /readyz said 503 for {not_ready:?} in all");
    for failure in &failures {
        eprintln!(
            "failover: failed at {:?}: {}",
            failure.started, failure.frame
        );
    }

    assert!(failures.is_empty(), "{} requests failed", failures.len());
    for (label, window) in [
        ("before the first kill", Duration::ZERO..first_kill),
        ("after the first kill", first_kill..second_kill),
        ("after the second kill", second_kill..epoch.elapsed()),
    ] {
        assert!(
            timings.iter().any(|t| window.contains(&t.started)),
            "no handshake completed {label}"
        );
    }
    // Latency, not an outage: the worst handshake around a kill took well under the deadline.
    for worst in [worst_first, worst_second] {
        assert!(worst < Duration::from_secs(5), "a handshake took {worst:?}");
    }

    gateway.stop().await;
    drop(one);
}

/// A DNS name stands for every address it resolves to, and an address that does not answer is
/// left out: `localhost` may resolve to `::1` as well as `127.0.0.1`, where the replica is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_name_reaches_the_replicas_it_resolves_to() {
    let db = TestDb::new(Backend::Postgres).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_, mut config) = configs();
    config.database_url = db.url.clone();
    let replica = Replica::build(config).await.expect("replica starts");
    let stop = CancellationToken::new();
    let served = tokio::spawn(replica.run(
        Listeners {
            grpc: listener,
            metrics: None,
        },
        videochat::telemetry::prometheus(),
        stop.clone(),
    ));

    // A dead address beside the name: it is probed, found not serving, and skipped.
    let dead = free_port().await;
    let gateway = Gateway::start(format!("http://localhost:{port},http://{dead}")).await;
    let mut alice = connect(&gateway.ws, "alice").await;
    let mut bob = connect(&gateway.ws, "bob").await;
    for _ in 0..10 {
        let ring = ring(&mut alice, &mut bob).await;
        ok(&bob
            .request(
                "videochat:declineVideochatRequest",
                json!({ "videochatRequestId": ring }),
            )
            .await);
        assert_eq!(alice.event(DECLINED).await["data"]["reason"], "declined");
    }
    gateway.stop().await;
    stop.cancel();
    served.await.unwrap().unwrap();
}
