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
//! within [`Timing::peers_for`]. A replica that runs alone, the usual embedded and single-node
//! deployment, then sends one `NOTIFY` every two seconds instead of up to two hundred a second,
//! each of which was a transaction of its own, a signal to every listening backend and a wake of
//! its own listener. A replica that joins is heard at its first hello; one that goes away stops
//! being announced to three hellos later. Announcements are only wake-ups: a missed one delays a
//! follower until its next poll and loses nothing.
//!
//! A replica that starts asks who is there: its first hello is a question (its origin and `?`),
//! which every replica listening answers at once with a hello of its own. So it knows within
//! [`Timing::probe_for`] whether it is alone, instead of announcing every commit for a whole
//! `peers_for` before it could have heard anyone's regular hello (measured: the first 6 s of a
//! lone replica's flat-out run went 1–3 % slower with up to 200 needless NOTIFY a second).

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
    /// How long a replica that just started waits for answers to its question before it
    /// believes it is alone.
    pub probe_for: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            notify_every: Duration::from_millis(5),
            hello_every: Duration::from_secs(2),
            peers_for: Duration::from_secs(6),
            probe_for: Duration::from_millis(500),
        }
    }
}

/// Set by commits with events; read by the announcer. Also what the listener heard last.
pub(super) struct Announce {
    pending: AtomicBool,
    /// Another replica asked who is there: say hello now.
    asked: AtomicBool,
    wake: Notify,
    /// When (Unix ms) another replica was last heard, or this one assumed there might be one.
    peer_heard_ms: AtomicI64,
    peers_for_ms: i64,
}

impl Announce {
    pub(super) fn new(timing: Timing) -> Self {
        let peers_for_ms = i64::try_from(timing.peers_for.as_millis()).unwrap_or(i64::MAX / 4);
        let probe_for_ms = i64::try_from(timing.probe_for.as_millis()).unwrap_or(i64::MAX / 4);
        Self {
            pending: AtomicBool::new(false),
            asked: AtomicBool::new(false),
            wake: Notify::new(),
            // Until the answers to its question had time to come, a replica cannot know it is
            // alone: as if it had heard someone, `probe_for` before it would stop announcing.
            peer_heard_ms: AtomicI64::new(now_ms() - peers_for_ms + probe_for_ms.min(peers_for_ms)),
            peers_for_ms,
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

    /// Another replica that just started asked who is there.
    fn asked(&self) {
        self.asked.store(true, Ordering::Release);
        self.wake.notify_one();
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
    let mut listener = PgListener::connect_with(pool).await?;
    // Listening before the question is asked, so that no answer comes before it.
    match listener.listen(OUTBOX_CHANNEL).await {
        Ok(()) => {
            tokio::spawn(listen(
                listener,
                origin.to_owned(),
                signal,
                announce.clone(),
                stop.clone(),
            ));
        }
        Err(error) => {
            tracing::error!(%error, "cannot LISTEN for outbox events; falling back to polling");
            // Deaf for good: keep announcing, since others may be listening.
            announce.peers_for_ms_forever();
        }
    }
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
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = listener.try_recv() => match received {
                Ok(Some(notification)) => {
                    let payload = notification.payload();
                    let (from, question) = match payload.strip_suffix('?') {
                        Some(from) => (from, true),
                        None => (payload, false),
                    };
                    if from != origin {
                        announce.peer_heard();
                        crate::store::bump(&signal);
                        if question {
                            announce.asked();
                        }
                    }
                }
                // The connection was lost and made again: what was said meanwhile is lost.
                Ok(None) => {
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
    // The first hello asks who is there.
    let asking = format!("{origin}?");
    let mut question = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = announce.wake.notified() => {}
            _ = tokio::time::sleep_until(next_hello) => {}
        }
        let now = tokio::time::Instant::now();
        // Taken whether or not a hello is due anyway: one hello answers it.
        let asked = announce.asked.swap(false, Ordering::AcqRel);
        let hello = now >= next_hello || asked;
        let commits =
            announce.pending.swap(false, Ordering::AcqRel) && announce.peers_listening(now_ms());
        if !hello && !commits {
            continue;
        }
        let payload = if question { &asking } else { &origin };
        question = false;
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(OUTBOX_CHANNEL)
            .bind(payload)
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
        let before = now_ms();
        let announce = Announce::new(Timing {
            peers_for: Duration::from_millis(1_000),
            probe_for: Duration::from_millis(100),
            ..Timing::default()
        });
        let after = now_ms();
        let started = announce.peer_heard_ms.load(Ordering::Relaxed);
        // As if a peer had been heard 900 ms ago: announced for the probe's 100 ms only.
        assert!((before - 900..=after - 900).contains(&started), "{started}");
        assert!(
            announce.peers_listening(started + 1_000),
            "before it could know"
        );
        assert!(!announce.peers_listening(started + 1_001), "alone since");
        announce.peer_heard();
        let heard = announce.peer_heard_ms.load(Ordering::Relaxed);
        assert!(announce.peers_listening(heard + 500));
        assert!(!announce.peers_listening(heard + 1_001));
        announce.peers_for_ms_forever();
        assert!(announce.peers_listening(heard + 10_000_000), "deaf: always");
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
