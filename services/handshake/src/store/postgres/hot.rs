//! The hot path's own thread: this replica's load and write batches ([`super::batch`]) run on a
//! runtime of their own, over a pool of their own, on one thread named `pg-batches`.
//!
//! Why: with one executor per kind, batches of a kind follow one another, and whatever delays
//! an executor between Postgres's answer and its next statement delays every handshake queued
//! behind it. With every statement's duration logged (`log_min_duration_statement = 0`), flat
//! out at 50 pairs, a write batch started every 2.9 ms and Postgres's bind and execute took
//! 1.3 ms of it; on the shared runtime part of the rest was the executor task waiting its turn
//! behind the gateway's socket tasks on two busy worker threads. On its own thread, the answer
//! wakes the executor directly (the kernel's wake-up, not the runtime's queue). Measured
//! (`docs/benchmarks.md`, one binary, both ways interleaved): flat Postgres +2.6 % without
//! webhooks and +7 % with them; paced latency unchanged.
//!
//! The pool's connections are opened from this thread's runtime, so their sockets belong to its
//! I/O driver: an answer from Postgres is noticed by this thread, not by whichever of the main
//! runtime's workers next polls its driver. Callers on the main runtime only queue a job and
//! await a oneshot answer, both of which work across runtimes.

use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;

use super::announce::Announce;
use super::apply::{Applies, ApplyJob};
use super::batch::Batcher;
use super::load::{LoadJob, Loads};
use super::{EXECUTORS, KEPT_OPEN, MAX_BATCH, open_all, pool_options};
use crate::change::Facts;
use crate::store::{Applied, StoreError, StoreResult};

/// The name of the thread, as `top -H` and profiles show it.
const THREAD_NAME: &str = "pg-batches";

/// The queues of the hot path: callers submit to them from any runtime.
pub(super) struct HotPath {
    pub loads: Batcher<LoadJob, Facts>,
    pub applies: Batcher<ApplyJob, Applied>,
}

/// Starts the thread, opens (and readies) its pool of `max_connections`, and returns the queues
/// once they are served. The thread ends, closing its pool, when `stop` is cancelled.
pub(super) async fn start(
    options: PgConnectOptions,
    max_connections: u32,
    origin: &str,
    announce: Arc<Announce>,
    stop: CancellationToken,
) -> StoreResult<HotPath> {
    let (ready, started) = tokio::sync::oneshot::channel::<StoreResult<HotPath>>();
    let origin = origin.to_owned();
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready.send(Err(StoreError::Thread(error)));
                    return;
                }
            };
            runtime.block_on(serve(
                options,
                max_connections,
                origin,
                announce,
                stop,
                ready,
            ));
        })
        .map_err(StoreError::Thread)?;
    started.await.unwrap_or_else(|_| {
        Err(StoreError::Thread(std::io::Error::other(
            "the hot path's thread ended while starting",
        )))
    })
}

/// The thread's work: open the pool, start the executors on this runtime, answer `ready`, and
/// keep them running until `stop`.
async fn serve(
    options: PgConnectOptions,
    max_connections: u32,
    origin: String,
    announce: Arc<Announce>,
    stop: CancellationToken,
    ready: tokio::sync::oneshot::Sender<StoreResult<HotPath>>,
) {
    let opened = async {
        let pool = pool_options(max_connections, &origin)
            .connect_with(options)
            .await?;
        open_all(&pool, max_connections.min(KEPT_OPEN)).await?;
        StoreResult::Ok(pool)
    }
    .await;
    let pool = match opened {
        Ok(pool) => pool,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    // `Batcher::start` spawns its executors on the current runtime: this one.
    let hot = HotPath {
        loads: Batcher::start(
            Arc::new(Loads { pool: pool.clone() }),
            EXECUTORS,
            MAX_BATCH,
            "load",
            stop.clone(),
        ),
        applies: Batcher::start(
            Arc::new(Applies {
                pool: pool.clone(),
                origin,
                announce,
            }),
            EXECUTORS,
            MAX_BATCH,
            "apply",
            stop.clone(),
        ),
    };
    if ready.send(Ok(hot)).is_err() {
        // Whoever started the store is gone.
        stop.cancel();
    }
    stop.cancelled().await;
    pool.close().await;
}
