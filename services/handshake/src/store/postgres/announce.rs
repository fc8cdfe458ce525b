//! Telling other replicas that the outbox has new events, and hearing them say so.
//!
//! A replica's own gateways get its events pushed at once; other replicas' followers read the
//! outbox when woken, or at their next poll. The wake is a `NOTIFY` on [`OUTBOX_CHANNEL`] whose
//! payload is the sender's origin, sent outside every write (a `NOTIFY` inside a write would
//! serialize all writers of the instance on the notify queue at commit) and at most one per
//! [`Timing::notify_every`] for all the commits in between.
//!
//! Only when someone listens. Every replica says hello — the same `NOTIFY` — every
//! [`Timing::hello_every`], and announces its commits only while it has heard another origin
//! within [`Timing::peers_for`] (and for that long after it starts, before it could have heard
//! anyone). A replica that runs alone, the usual embedded and single-node deployment, then sends
//! one `NOTIFY` every two seconds instead of up to two hundred a second, each of which was a
//! transaction of its own, a signal to every listening backend and a wake of its own listener.
//! A replica that joins is heard at its first hello; one that goes away stops being announced
//! to three hellos later. Announcements are only wake-ups: a missed one delays a follower until
//! its next poll and loses nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::service::now_ms;

/// NOTIFY channel announcing new outbox events; the payload is the committing replica's origin.
pub const OUTBOX_CHANNEL: &str = "videochat_outbox";

/// The announcer's clock.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timing {
    /// At most one announcement per this interval, however many commits.
    pub notify_every: Duration,
    /// How often a replica says it is there.
    pub hello_every: Duration,
    /// How long after the last word from another replica commits are still announced.
    pub peers_for: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            notify_every: Duration::from_millis(5),
            hello_every: Duration::from_secs(2),
            peers_for: Duration::from_secs(6),
        }
    }
}

/// Set by commits with events; read by the announcer. Also what the listener heard last.
pub(super) struct Announce {
    pending: AtomicBool,
    wake: Notify,
    /// When (Unix ms) another replica was last heard, or this one assumed there might be one.
    peer_heard_ms: AtomicI64,
    peers_for_ms: i64,
}

impl Announce {
    fn new(timing: Timing) -> Self {
        Self {
            pending: AtomicBool::new(false),
            wake: Notify::new(),
            // Until it has listened for a while, a replica cannot know it is alone.
            peer_heard_ms: AtomicI64::new(now_ms()),
            peers_for_ms: i64::try_from(timing.peers_for.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// A write committed events: they are announced with the next NOTIFY if anyone listens.
    /// Alone, nothing is marked and the announcer is not woken (a wake per commit for nothing).
    pub fn commit_with_events(&self) {
        if !self.peers_listening(now_ms()) {
            return;
        }
        self.pending.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Another replica spoke, or this one cannot hear (assume someone might be there).
    fn peer_heard(&self) {
        self.peer_heard_ms.fetch_max(now_ms(), Ordering::Relaxed);
    }

    /// From now on, commits are always announced (the listener cannot tell who is there).
    fn peers_for_ms_forever(&self) {
        self.peer_heard_ms.store(i64::MAX / 2, Ordering::Relaxed);
    }

    /// Whether commits are announced at `now_ms`.
    fn peers_listening(&self, now_ms: i64) -> bool {
        now_ms - self.peer_heard_ms.load(Ordering::Relaxed) <= self.peers_for_ms
    }
}

/// Starts the listener and the announcer of `origin` until `stop`; returns the handle writes
/// report their commits to.
pub(super) async fn start(
    pool: &PgPool,
    origin: &str,
    signal: Arc<watch::Sender<u64>>,
    timing: Timing,
    stop: CancellationToken,
) -> Result<Arc<Announce>, sqlx::Error> {
    let announce = Arc::new(Announce::new(timing));
    let listener = PgListener::connect_with(pool).await?;
    tokio::spawn(listen(
        listener,
        origin.to_owned(),
        signal,
        announce.clone(),
        stop.clone(),
    ));
    tokio::spawn(announce_commits(
        pool.clone(),
        origin.to_owned(),
        announce.clone(),
        timing,
        stop,
    ));
    Ok(announce)
}

/// Relays other replicas' announcements into the local signal, and notes that someone else is
/// there. On a lost connection `PgListener` reconnects by itself; followers also poll, so a
/// NOTIFY missed meanwhile only delays delivery.
async fn listen(
    mut listener: PgListener,
    origin: String,
    signal: Arc<watch::Sender<u64>>,
    announce: Arc<Announce>,
    stop: CancellationToken,
) {
    if let Err(error) = listener.listen(OUTBOX_CHANNEL).await {
        tracing::error!(%error, "cannot LISTEN for outbox events; falling back to polling");
        // Deaf for good: keep announcing, since others may be listening.
        announce.peers_for_ms_forever();
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = listener.try_recv() => match received {
                Ok(Some(notification)) if notification.payload() == origin => {}
                Ok(_) => {
                    announce.peer_heard();
                    crate::store::bump(&signal);
                }
                Err(error) => {
                    tracing::warn!(%error, "outbox LISTEN connection lost; reconnecting");
                    // What was said meanwhile is lost: assume someone is there.
                    announce.peer_heard();
                    crate::store::bump(&signal);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
        }
    }
}

/// Sends a hello every [`Timing::hello_every`], and one NOTIFY for every burst of local
/// commits with events while someone listens (see the module documentation).
async fn announce_commits(
    pool: PgPool,
    origin: String,
    announce: Arc<Announce>,
    timing: Timing,
    stop: CancellationToken,
) {
    let mut next_hello = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = announce.wake.notified() => {}
            _ = tokio::time::sleep_until(next_hello) => {}
        }
        let now = tokio::time::Instant::now();
        let hello = now >= next_hello;
        let commits =
            announce.pending.swap(false, Ordering::AcqRel) && announce.peers_listening(now_ms());
        if !hello && !commits {
            continue;
        }
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(OUTBOX_CHANNEL)
            .bind(&origin)
            .execute(&pool)
            .await
        {
            tracing::debug!(%error, "cannot announce new events; other replicas will poll");
        }
        metrics::counter!("videochat_outbox_announcements_total", "kind" => if commits { "commits" } else { "hello" })
            .increment(1);
        next_hello = now + timing.hello_every;
        tokio::time::sleep(timing.notify_every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_announces_while_it_heard_a_peer_lately_and_at_first() {
        let announce = Announce::new(Timing {
            peers_for: Duration::from_millis(100),
            ..Timing::default()
        });
        let started = announce.peer_heard_ms.load(Ordering::Relaxed);
        assert!(
            announce.peers_listening(started + 100),
            "before it could know"
        );
        assert!(!announce.peers_listening(started + 101), "alone since");
        announce.peer_heard();
        let heard = announce.peer_heard_ms.load(Ordering::Relaxed);
        assert!(announce.peers_listening(heard + 50));
        assert!(!announce.peers_listening(heard + 101));
        announce.peers_for_ms_forever();
        assert!(announce.peers_listening(heard + 1_000_000), "deaf: always");
    }

    #[test]
    fn a_commit_is_marked_for_announcing_only_while_someone_listens() {
        let announce = Announce::new(Timing::default());
        announce.peer_heard_ms.store(0, Ordering::Relaxed);
        announce.commit_with_events();
        assert!(!announce.pending.load(Ordering::Acquire), "alone");
        announce.peer_heard();
        announce.commit_with_events();
        assert!(announce.pending.load(Ordering::Acquire), "heard a peer");
    }
}
