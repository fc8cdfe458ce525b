//! Background work of a service replica: ring timeouts, dead gateways, and pruning.
//!
//! Every replica runs these; they are safe to run concurrently because each change is a
//! conditional update (a ring expires once, whoever gets there first).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::service::{Handshake, now_ms};

/// The longest a timeout can go unnoticed if no wake-up comes (another replica's ring).
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// How soon ring expiry tries again after a database error.
const RETRY_AFTER_ERROR: Duration = Duration::from_millis(100);
/// How often dead gateways are swept and old records pruned.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Idempotency keys are honoured for this long (CONTRACT §2).
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Expires rings when their timeout comes: sleeps until the earliest pending timeout, at most
/// [`MAX_SLEEP`]. A ring created meanwhile times out a whole ring timeout later, so it cannot be
/// missed by more than that bound (and waking on every commit would double the queries per
/// handshake for nothing).
pub async fn expire_rings(handshake: Handshake, shutdown: CancellationToken) {
    loop {
        let sleep = match handshake.expire_due().await {
            Ok(expired) => {
                if expired > 0 {
                    tracing::debug!(expired, "rings timed out");
                }
                match handshake.store().next_expiry().await {
                    Ok(Some(at)) => {
                        Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0))
                            .min(MAX_SLEEP)
                    }
                    Ok(None) => MAX_SLEEP,
                    Err(error) => {
                        tracing::warn!(%error, "cannot read next ring timeout");
                        MAX_SLEEP
                    }
                }
            }
            Err(error) => {
                // Soon: rings that fell due during a database outage must end as soon as it
                // is back (and broken pooled connections are dropped one check at a time).
                tracing::warn!(%error, "ring expiry failed; retrying");
                RETRY_AFTER_ERROR
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Forgets sockets of gateways whose presence lease ran out, and prunes delivered events,
/// idempotency records and call history past their windows.
pub async fn sweep(
    handshake: Handshake,
    outbox_retention: Duration,
    history_retention: Duration,
    shutdown: CancellationToken,
) {
    let retention_ms = i64::try_from(outbox_retention.as_millis()).unwrap_or(i64::MAX / 2);
    let history_ms = i64::try_from(history_retention.as_millis()).unwrap_or(i64::MAX / 2);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        let now = now_ms();
        match handshake.store().sweep_dead_gateways(now).await {
            Ok(0) => {}
            Ok(gone) => tracing::info!(
                sockets = gone,
                "forgot sockets of gateways that stopped heart-beating"
            ),
            Err(error) => tracing::warn!(%error, "presence sweep failed"),
        }
        if let Err(error) = handshake
            .store()
            .prune(
                now - retention_ms,
                now - IDEMPOTENCY_WINDOW_MS,
                now.saturating_sub(history_ms),
            )
            .await
        {
            tracing::warn!(%error, "pruning failed");
        }
    }
}
