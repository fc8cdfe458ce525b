//! The dispatcher: one background task per replica that sends what the outbox holds.
//!
//! Deliveries this replica just committed arrive in memory, already claimed (see
//! [`super::handoff`]), and are sent at once. Everything else is claimed from the table: the
//! loop claims when woken (an operator's `RetryDeliveries`), by another replica's commit (the outbox signal), when a retry it scheduled falls due, or every
//! `VIDEOCHAT_WEBHOOK_POLL_MS` (which finds other replicas' retries and rows whose claim lapsed),
//! at most every [`CLAIM_EVERY`]. A claim takes as many due rows as there are free slots
//! (`VIDEOCHAT_WEBHOOK_CONCURRENCY`) under a lease longer than one attempt. Each attempt runs on
//! a task of its own, so a slow endpoint holds one slot, not the queue; outcomes are recorded in
//! batches. The lease is the only coordination between replicas: a claimed row is not due again
//! until it ends, and a replica that dies mid-send leaves the row to be sent again then
//! (at-least-once, same `webhook-id`; receivers drop duplicates by that id).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use rand::Rng as _;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::events::{CALL_EVENTS, PUSH_CANCEL, PUSH_RING};
use super::sender::Sender;
use super::settings::WebhookSettings;
use crate::service::now_ms;
use crate::store::Store;
use crate::store::webhooks::{Delivery, GroupEnd, GroupRef, Settle};

/// Most rows one claim takes.
const MAX_CLAIM: usize = 64;
/// Most outcomes recorded in one transaction.
const MAX_SETTLE: usize = 256;
/// How long outcomes are gathered before they are recorded. A delivered row still in the table
/// is only sent again if its replica dies within this time (at-least-once allows it).
const SETTLE_LINGER: Duration = Duration::from_millis(20);
/// How much longer than one attempt's timeout a claim holds a row.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How often failed rows past `VIDEOCHAT_WEBHOOK_RETENTION_S` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Least time between two claims: the writes of a busy service wake the dispatcher thousands
/// of times a second, and claiming what a few milliseconds brought in one statement costs far
/// less than claiming at every wake (a quiet service claims at once).
const CLAIM_EVERY: Duration = Duration::from_millis(5);
/// How long shutdown waits for attempts in flight (unfinished ones are sent again later).
const DRAIN: Duration = Duration::from_secs(2);

/// What starts the dispatcher's work: deliveries this replica just committed (sent at once,
/// already claimed), and a wake to claim due rows from the table.
pub struct Wakes {
    pub wake: Arc<Notify>,
    pub committed: mpsc::Receiver<Vec<Delivery>>,
}

/// How long a claim (or a delivery written by this replica) is held: one attempt's timeout and
/// a margin.
pub fn lease(settings: &WebhookSettings) -> Duration {
    settings.timeout + LEASE_MARGIN
}

/// What every attempt of this dispatcher shares.
struct Attempts {
    settings: WebhookSettings,
    sender: Sender,
    /// Outcomes, recorded in batches by [`record_outcomes`].
    settled: mpsc::Sender<(Delivery, Settle)>,
    /// The earliest retry this dispatcher scheduled (Unix ms; `i64::MAX`: none). Retries other
    /// replicas scheduled, and rows whose claim lapsed, are found by the poll.
    next_retry: AtomicI64,
    /// Set when due rows may be waiting for a free slot: a finishing attempt then wakes the loop.
    backlog: AtomicBool,
    wake: Arc<Notify>,
    metrics: EventMetrics,
}

/// How much lower than the handshake's threads the dispatcher's thread is scheduled (a `nice`
/// increment): when the CPU is saturated, rings and answers go first and webhooks wait.
const DISPATCHER_NICE: i32 = 10;

/// The thread the HTTP exchanges run on: a runtime of its own, scheduled [`DISPATCHER_NICE`]
/// below the handshake's threads.
///
/// Why: on the shared runtime every delivery's exchange (sign, write, read the answer) ran
/// between the handshake's own tasks, and under load that queueing, more than the CPU the
/// deliveries used, cost handshakes (measured with `just bench`, `postgres-webhooks`: CPU per
/// handshake +5 %, handshakes/s −14 %). On a thread of its own the kernel interleaves the two,
/// and the nice increment lets the handshake go first when both want the CPU. Under saturation
/// webhooks are late, never lost (they are rows). The claims and the outcome writes stay on the
/// main runtime, with the database connections.
struct SendThread {
    handle: tokio::runtime::Handle,
    /// Dropped (or sent) to stop the thread's runtime.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SendThread {
    fn start() -> std::io::Result<Self> {
        let (started, handle) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || {
                lower_own_priority();
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        let _ = started.send(Ok(runtime.handle().clone()));
                        // Runs the attempts spawned on it until told to stop.
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                    }
                    Err(error) => {
                        let _ = started.send(Err(error));
                    }
                }
            })?;
        let handle = handle
            .recv()
            .map_err(|_| std::io::Error::other("the webhook thread ended at start"))??;
        Ok(Self {
            handle,
            stop: Some(stop),
        })
    }
}

impl Drop for SendThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Lowers the calling thread's scheduling priority by [`DISPATCHER_NICE`] (Linux schedules
/// threads one by one; elsewhere, and where it is refused, the thread keeps its priority).
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority only read their arguments; they touch no memory of
        // ours.
        let outcome = unsafe {
            let tid = libc::gettid();
            let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
            libc::setpriority(
                libc::PRIO_PROCESS,
                tid as libc::id_t,
                now.saturating_add(DISPATCHER_NICE),
            )
        };
        if outcome != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the webhook thread's priority");
        }
    }
}

/// Sends due deliveries until `shutdown`.
pub async fn run(
    store: Arc<dyn Store>,
    settings: WebhookSettings,
    sender: Sender,
    wakes: Wakes,
    shutdown: CancellationToken,
) {
    let Wakes {
        wake,
        mut committed,
    } = wakes;
    let slots = Arc::new(Semaphore::new(settings.concurrency));
    let tasks = TaskTracker::new();
    let send_thread = SendThread::start()
        .inspect_err(|error| {
            tracing::warn!(%error, "no thread of its own for webhooks; sending on the main runtime");
        })
        .ok();
    let on = send_thread
        .as_ref()
        .map_or_else(tokio::runtime::Handle::current, |t| t.handle.clone());
    let (settled, outcomes) = mpsc::channel(1024);
    tasks.spawn(record_outcomes(store.clone(), outcomes, lease(&settings)));
    let attempts = Arc::new(Attempts {
        settings,
        sender,
        settled,
        next_retry: AtomicI64::new(i64::MAX),
        backlog: AtomicBool::new(false),
        wake: wake.clone(),
        metrics: EventMetrics::register(),
    });
    let poll = attempts.settings.poll;
    let mut outbox = store.outbox_signal();
    let mut outbox_open = true;
    let mut last_gauge: Option<Instant> = None;
    let mut last_prune: Option<Instant> = None;
    let mut last_claim = Instant::now();
    let mut claim = true;
    loop {
        if claim {
            tokio::time::sleep_until(last_claim + CLAIM_EVERY).await;
            last_claim = Instant::now();
            let due = attempts.next_retry.load(Ordering::Acquire);
            if due <= now_ms() {
                // This claim takes it (or another replica did).
                let _ = attempts.next_retry.compare_exchange(
                    due,
                    i64::MAX,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            claim_and_send(&store, &attempts, &slots, &tasks, &on).await;
            if last_gauge.is_none_or(|at| at.elapsed() >= poll) {
                last_gauge = Some(Instant::now());
                match store.pending_deliveries().await {
                    Ok(depth) => metrics::gauge!("videochat_webhook_queue_depth").set(depth as f64),
                    Err(error) => tracing::warn!(%error, "cannot count pending webhooks"),
                }
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let retention = attempts.settings.retention.as_millis();
                let before = now_ms() - i64::try_from(retention).unwrap_or(i64::MAX / 4);
                if let Err(error) = store.prune_deliveries(before).await {
                    tracing::warn!(%error, "cannot prune delivered webhooks");
                }
            }
        }
        // The next claim from the table: when a retry falls due, at the latest after a poll.
        let pause = match attempts.next_retry.load(Ordering::Acquire) {
            i64::MAX => poll,
            due => Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0)).min(poll),
        };
        let claim_at = last_claim + pause;
        claim = true;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(batch) = committed.recv() => {
                // Sent at once, already claimed: the table is read only when due anyway.
                claim = Instant::now() >= claim_at;
                start(batch, &attempts, &slots, &tasks, &on).await;
            }
            _ = wake.notified() => {}
            changed = outbox.changed(), if outbox_open => outbox_open = changed.is_ok(),
            _ = tokio::time::sleep_until(claim_at) => {}
        }
    }
    // The outcome recorder ends once the attempts in flight have sent theirs.
    drop(attempts);
    tasks.close();
    let _ = tokio::time::timeout(DRAIN, tasks.wait()).await;
    // Attempts still running now are dropped with the thread; their leases run out and they
    // are sent again (at-least-once).
    drop(send_thread);
}

/// Records attempts' outcomes in batches: whatever arrives within [`SETTLE_LINGER`] of the
/// first, [`MAX_SETTLE`] per statement. Under load that is one write for hundreds of deliveries
/// instead of one each, and the write path shares the database with fewer commits. A grouped
/// delivery's outcome is kept until its group's last one is in ([`OpenGroups`]); the group then
/// ends in one write.
///
/// The linger is a sleep followed by taking what came, not a wait on each outcome: outcomes come
/// from the webhook thread, and a receiver waiting on the channel is woken (a thread of this
/// runtime unparked, a context switch on an idle core) by every one of them, thousands a second
/// under load. Asleep, it is woken once per batch.
async fn record_outcomes(
    store: Arc<dyn Store>,
    mut outcomes: mpsc::Receiver<(Delivery, Settle)>,
    lease: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_SETTLE);
    let mut groups = OpenGroups::default();
    while let Some(first) = outcomes.recv().await {
        batch.push(first);
        tokio::time::sleep(SETTLE_LINGER).await;
        loop {
            // Empty, or the dispatcher stopped: record what came.
            while batch.len() < MAX_SETTLE {
                let Ok(next) = outcomes.try_recv() else {
                    break;
                };
                batch.push(next);
            }
            if batch.is_empty() {
                break;
            }
            let mut rows = Vec::new();
            let mut ended = Vec::new();
            for (delivery, settle) in batch.drain(..) {
                match delivery.group.clone() {
                    None => rows.push((delivery.id, settle)),
                    Some(group) => ended.extend(groups.record(&group, delivery, settle)),
                }
            }
            if let Err(error) = store.settle_deliveries(&rows, now_ms()).await {
                // Their leases run out and they are sent again: at-least-once.
                tracing::warn!(%error, deliveries = rows.len(), "cannot record webhook attempts");
            }
            if let Err(error) = store.settle_groups(&ended, now_ms()).await {
                // Their leases run out and they are released and sent again: at-least-once.
                tracing::warn!(%error, groups = ended.len(), "cannot record webhook groups");
            }
            groups.forget_older_than(lease);
        }
    }
}

/// The groups ([`GroupRef`]) some of whose deliveries' outcomes are in, waiting for the rest.
#[derive(Default)]
struct OpenGroups(HashMap<Arc<str>, OpenGroup>);

struct OpenGroup {
    size: usize,
    seen: usize,
    undelivered: Vec<(Delivery, Settle)>,
    opened: Instant,
}

impl OpenGroups {
    /// Takes the outcome of one of `group`'s deliveries; the group's end once it had them all.
    fn record(&mut self, group: &GroupRef, delivery: Delivery, settle: Settle) -> Option<GroupEnd> {
        let open = self.0.entry(group.id.clone()).or_insert_with(|| OpenGroup {
            size: group.size,
            seen: 0,
            undelivered: Vec::new(),
            opened: Instant::now(),
        });
        open.seen += 1;
        if settle != Settle::Delivered {
            open.undelivered.push((delivery, settle));
        }
        if open.seen < open.size {
            return None;
        }
        let open = self.0.remove(&group.id)?;
        Some(GroupEnd {
            id: group.id.clone(),
            undelivered: open.undelivered,
        })
    }

    /// Forgets groups open for longer than their lease: a delivery of theirs never had its
    /// attempt here (the hand-off overflowed), and the group's row, lapsed, is released to be
    /// sent again whole by any replica (at-least-once).
    fn forget_older_than(&mut self, lease: Duration) {
        self.0.retain(|_, open| open.opened.elapsed() < lease);
    }
}

/// Claims as many due rows as there are free slots and starts sending each.
async fn claim_and_send(
    store: &Arc<dyn Store>,
    attempts: &Arc<Attempts>,
    slots: &Arc<Semaphore>,
    tasks: &TaskTracker,
    on: &tokio::runtime::Handle,
) {
    loop {
        let free = slots.available_permits().min(MAX_CLAIM);
        if free == 0 {
            // More may be due: the next attempt to finish wakes the loop.
            attempts.backlog.store(true, Ordering::Release);
            return;
        }
        let now = now_ms();
        // Groups whose replica died become rows first, so that this claim can take them.
        if let Err(error) = store.release_lapsed_groups(now).await {
            tracing::warn!(%error, "cannot release lapsed webhook groups");
        }
        let lease = lease(&attempts.settings).as_millis();
        let claimed = match store
            .claim_deliveries(
                now,
                now + i64::try_from(lease).unwrap_or(i64::MAX / 4),
                i64::try_from(free).unwrap_or(1),
            )
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "cannot claim webhooks; trying again at the next wake");
                return;
            }
        };
        let full = claimed.len() == free;
        start(claimed, attempts, slots, tasks, on).await;
        if !full {
            return;
        }
    }
}

/// Starts an attempt at each of `deliveries` on the webhook thread, each once it has a slot.
///
/// The attempts that have a slot are handed over together, by one task that starts them there:
/// each task spawned onto that thread from here wakes it (a futex or an eventfd write, and a
/// context switch when it sleeps), and a busy replica commits dozens of deliveries at a time.
async fn start(
    deliveries: Vec<Delivery>,
    attempts: &Arc<Attempts>,
    slots: &Arc<Semaphore>,
    tasks: &TaskTracker,
    on: &tokio::runtime::Handle,
) {
    let mut ready = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(TryAcquireError::NoPermits) => {
                // Start those that have one: only their ends free the slots.
                hand_over(std::mem::take(&mut ready), attempts, tasks, on);
                match slots.clone().acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => break,
                }
            }
            Err(TryAcquireError::Closed) => break,
        };
        ready.push((delivery, slot));
    }
    hand_over(ready, attempts, tasks, on);
}

/// Starts `ready` on `on` with one hand-over (see [`start`]).
fn hand_over(
    ready: Vec<(Delivery, OwnedSemaphorePermit)>,
    attempts: &Arc<Attempts>,
    tasks: &TaskTracker,
    on: &tokio::runtime::Handle,
) {
    if ready.is_empty() {
        return;
    }
    let (tracker, attempts) = (tasks.clone(), attempts.clone());
    tasks.spawn_on(
        async move {
            for (delivery, slot) in ready {
                // On `on`'s own runtime: a local spawn, no wake.
                tracker.spawn(deliver(attempts.clone(), delivery, slot));
            }
        },
        on,
    );
}

/// One attempt at one delivery, and its outcome recorded.
async fn deliver(attempts: Arc<Attempts>, delivery: Delivery, slot: OwnedSemaphorePermit) {
    let settings = &attempts.settings;
    let (event, metrics) = attempts.metrics.of(&delivery.event_type);
    let span = tracing::info_span!(
        "webhook.deliver",
        otel.kind = "client",
        webhook.id = %delivery.id,
        webhook.event = event,
        webhook.attempt = delivery.attempts,
        http.response.status_code = tracing::field::Empty,
    );
    // Linked to the request whose change wrote it, as the events that change caused are: a
    // trace of the call leads to its webhooks, and an attempt made hours later (a retry) does
    // not stretch that trace over hours.
    videochat_telemetry::link_to_traceparent(&span, &delivery.traceparent);
    async {
        metrics.attempts.increment(1);
        let started = Instant::now();
        let result = attempts.sender.send(&delivery).await;
        metrics
            .attempt_seconds
            .record(started.elapsed().as_secs_f64());
        let now = now_ms();
        let settle = match result {
            Ok(status) => {
                tracing::Span::current().record("http.response.status_code", status);
                metrics.delivered.increment(1);
                metrics
                    .lag_seconds
                    .record((now - delivery.created_at_ms).max(0) as f64 / 1000.0);
                Settle::Delivered
            }
            Err(error) => {
                metrics.attempt_errors.increment(1);
                let age = Duration::from_millis(
                    u64::try_from(now - delivery.age_base_ms()).unwrap_or_default(),
                );
                if age >= settings.max_age {
                    tracing::warn!(
                        %error,
                        attempts = delivery.attempts,
                        endpoint = %delivery.endpoint,
                        "webhook failed for good; RetryDeliveries sends it again"
                    );
                    metrics.failed.increment(1);
                    Settle::Failed {
                        error: error.to_string(),
                    }
                } else {
                    let pause = backoff(
                        delivery.attempts,
                        settings.backoff_min,
                        settings.backoff_max,
                    );
                    tracing::info!(%error, attempts = delivery.attempts, ?pause, "webhook attempt failed; retrying");
                    let at = now + i64::try_from(pause.as_millis()).unwrap_or(i64::MAX / 4);
                    attempts.next_retry.fetch_min(at, Ordering::AcqRel);
                    Settle::Retry {
                        next_attempt_at_ms: at,
                        error: error.to_string(),
                    }
                }
            }
        };
        // Recorded by `record_outcomes`; if the dispatcher stopped meanwhile, the claim's
        // lease runs out and the row is sent again: at-least-once.
        let _ = attempts.settled.send((delivery, settle)).await;
    }
    .instrument(span)
    .await;
    drop(slot);
    // A slot is free: wake the loop if due rows were left waiting for one.
    if attempts.backlog.swap(false, Ordering::AcqRel) {
        attempts.wake.notify_one();
    }
}

/// The pause before the attempt after `attempts`: exponential (`min`, 2·`min`, 4·`min`, …,
/// capped at `max`) with full jitter (uniform below that ceiling, so that many deliveries failing
/// together do not come back together), but never below a tenth of `min`.
pub fn backoff(attempts: u32, min: Duration, max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    let ceiling = min.saturating_mul(1u32 << doublings).min(max);
    let floor = (min / 10).min(ceiling);
    let ms = rand::rng().random_range(floor.as_millis()..=ceiling.as_millis());
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The label of event types this build does not know (a row written by a newer replica): the
/// label set stays bounded.
const OTHER_EVENT: &str = "other";

/// One event type's metric handles.
struct Handles {
    attempts: metrics::Counter,
    attempt_seconds: metrics::Histogram,
    attempt_errors: metrics::Counter,
    delivered: metrics::Counter,
    lag_seconds: metrics::Histogram,
    failed: metrics::Counter,
}

impl Handles {
    fn register(event: &'static str) -> Self {
        let label = [("event", event)];
        Self {
            attempts: metrics::counter!("videochat_webhook_attempts_total", &label),
            attempt_seconds: metrics::histogram!("videochat_webhook_attempt_seconds", &label),
            attempt_errors: metrics::counter!("videochat_webhook_attempt_errors_total", &label),
            delivered: metrics::counter!("videochat_webhook_delivered_total", &label),
            lag_seconds: metrics::histogram!("videochat_webhook_delivery_lag_seconds", &label),
            failed: metrics::counter!("videochat_webhook_failed_total", &label),
        }
    }
}

/// The metric handles of every event type, registered once: `counter!` with a label looks its
/// series up in the recorder's registry (a hash and a lock) at every call, which was a tenth of
/// the webhook thread's time at a few thousand deliveries a second (`bench/profile.sh`).
struct EventMetrics(Vec<(&'static str, Handles)>);

impl EventMetrics {
    fn register() -> Self {
        Self(
            CALL_EVENTS
                .iter()
                .chain(&[PUSH_RING, PUSH_CANCEL, OTHER_EVENT])
                .map(|event| (*event, Handles::register(event)))
                .collect(),
        )
    }

    /// The bounded label of a stored event type, and its handles.
    fn of(&self, event_type: &str) -> (&'static str, &Handles) {
        let (event, handles) = self
            .0
            .iter()
            .find(|(event, _)| *event == event_type)
            .or_else(|| self.0.last())
            .expect("the list ends with the handles of unknown events");
        (event, handles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let min = Duration::from_secs(5);
        let max = Duration::from_secs(3600);
        for _ in 0..200 {
            let first = backoff(1, min, max);
            assert!(first >= min / 10 && first <= min, "{first:?}");
            let fourth = backoff(4, min, max);
            assert!(fourth <= min * 8, "{fourth:?}");
            let late = backoff(40, min, max);
            assert!(late <= max && late >= min / 10, "{late:?}");
        }
        let spread: std::collections::BTreeSet<_> =
            (0..50).map(|_| backoff(10, min, max)).collect();
        assert!(spread.len() > 10, "jitter spreads retries");
    }

    /// A group ends with the outcome of its last delivery, carrying the undelivered ones and
    /// nothing else; one whose outcomes stopped coming (its hand-off overflowed) is forgotten
    /// after its lease, for its lapsed row to be released.
    #[test]
    fn a_group_ends_with_its_last_outcome_and_keeps_only_the_undelivered() {
        let group = GroupRef {
            id: "grp_1".into(),
            size: 3,
        };
        let handed = |id: &str, group: &GroupRef| Delivery {
            id: id.into(),
            endpoint: "http://receiver".into(),
            event_type: "call.requested".into(),
            payload: "{}".into(),
            created_at_ms: 0,
            attempts: 1,
            retried_at_ms: None,
            last_error: None,
            traceparent: String::new(),
            group: Some(group.clone()),
        };
        let retry = Settle::Retry {
            next_attempt_at_ms: 5,
            error: "answered 500".into(),
        };
        let mut open = OpenGroups::default();
        assert_eq!(
            open.record(&group, handed("a", &group), Settle::Delivered),
            None
        );
        assert_eq!(
            open.record(&group, handed("b", &group), retry.clone()),
            None
        );
        let end = open
            .record(&group, handed("c", &group), Settle::Delivered)
            .expect("the third of three ends it");
        assert_eq!(end.id, group.id);
        assert_eq!(end.undelivered, vec![(handed("b", &group), retry)]);
        assert!(open.0.is_empty());

        let stalled = GroupRef {
            id: "grp_2".into(),
            size: 2,
        };
        assert_eq!(
            open.record(&stalled, handed("x", &stalled), Settle::Delivered),
            None
        );
        open.forget_older_than(Duration::from_secs(60));
        assert_eq!(open.0.len(), 1, "kept within its lease");
        open.forget_older_than(Duration::ZERO);
        assert!(open.0.is_empty());
    }

    #[test]
    fn every_known_event_has_its_own_label_and_the_rest_share_one() {
        let metrics = EventMetrics::register();
        for event in CALL_EVENTS.iter().chain(&[PUSH_RING, PUSH_CANCEL]) {
            assert_eq!(metrics.of(event).0, *event);
        }
        assert_eq!(metrics.of("call.unheard_of").0, OTHER_EVENT);
        assert_eq!(metrics.of("").0, OTHER_EVENT);
    }
}
