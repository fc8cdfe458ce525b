//! The handshake service's core, below gRPC: runs an operation as load → decide → write, with
//! idempotency, retries when the facts went stale, and the push of its events.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use videochat_proto::v1 as pb;

use crate::change::Change;
use crate::delivery::{self, Hub};
use crate::domain::{
    IdempotencyKey, JoinCredentials, RequestStatus, Ring, UserId, UserProfile, VideochatMode,
};
use crate::engine::events::{EventSources, Received, Webhook};
use crate::engine::{EngineKind, Engines};
use crate::error::{ErrorCode, HandshakeError};
use crate::history::CallPage;
use crate::machine::{self, Command, Context, Decision, Limits, Reply};
use crate::ringing::Ringing;
use crate::store::RoomApplied;
use crate::store::{IdempotencyRecord, Outbound, RecordedOutcome, Store, StoreError, Write};
use crate::webhooks::handoff::Handoff;

/// How often an operation is decided again after its facts went stale under it.
const MAX_ATTEMPTS: usize = 8;
/// How long a command keeps trying while the database is unreachable (below the gateway's
/// default call deadline of 10 s).
const RIDE_OUT: std::time::Duration = std::time::Duration::from_secs(6);

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Shared by the gRPC adapters and the background tasks.
#[derive(Clone)]
pub struct Handshake {
    store: Arc<dyn Store>,
    engines: Arc<Engines>,
    hub: Arc<Hub>,
    ring_timeout: Duration,
    limits: Limits,
    /// The engines whose room webhooks are received.
    events: Arc<EventSources>,
    webhooks: Option<Arc<Handoff>>,
    /// Direct rings rung here, for deciding their accepts without reading them back.
    ringing: Arc<Ringing>,
}

impl Handshake {
    pub fn new(
        store: Arc<dyn Store>,
        engines: Arc<Engines>,
        hub: Arc<Hub>,
        ring_timeout: Duration,
        limits: Limits,
    ) -> Self {
        Self {
            store,
            engines,
            hub,
            ring_timeout,
            limits,
            events: Arc::new(EventSources::default()),
            webhooks: None,
            ringing: Arc::new(Ringing::default()),
        }
    }

    /// Writes webhooks with every change from now on and hands them to the dispatcher after
    /// each commit (docs/webhooks.md).
    pub fn with_webhooks(mut self, handoff: Handoff) -> Self {
        self.webhooks = Some(Arc::new(handoff));
        self
    }

    /// Wakes the webhook dispatcher (deliveries became due outside the write path).
    pub fn wake_webhooks(&self) {
        if let Some(webhooks) = &self.webhooks {
            webhooks.wake();
        }
    }

    fn push_enabled(&self) -> bool {
        self.webhooks.as_ref().is_some_and(|w| w.push_enabled())
    }

    /// The webhooks a decided change causes (none without webhooks configured).
    fn outbound(&self, change: &Change, facts: &crate::change::Facts, now: i64) -> Outbound {
        match &self.webhooks {
            Some(webhooks) => webhooks.outbound(change, facts, now),
            None => Outbound::default(),
        }
    }

    /// Receives the room webhooks of these engines.
    pub fn receiving(mut self, events: EventSources) -> Self {
        self.events = Arc::new(events);
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn context(&self, now_ms: i64) -> Context<'_> {
        Context {
            engines: &self.engines,
            ring_timeout: self.ring_timeout,
            limits: self.limits,
            now_ms,
        }
    }

    /// Runs `command` for `actor` exactly once per idempotency key: a retry with the same key
    /// gets the first answer (reply or application error) and changes nothing.
    ///
    /// While the database is unreachable (a restart, a failover) the command is tried again
    /// with backoff for up to [`RIDE_OUT`], so a short outage costs latency, not an error.
    #[tracing::instrument(name = "handshake.execute", skip_all, fields(videochat.operation = command.name(), videochat.user = %actor))]
    pub async fn execute(
        &self,
        actor: &UserId,
        key: &IdempotencyKey,
        command: &Command,
        traceparent: &str,
    ) -> Result<Reply, HandshakeError> {
        let started = std::time::Instant::now();
        let mut backoff = std::time::Duration::from_millis(25);
        loop {
            match self.execute_once(actor, key, command, traceparent).await {
                Err(HandshakeError::Store(StoreError::Unavailable(error)))
                    if started.elapsed() + backoff < RIDE_OUT =>
                {
                    tracing::warn!(%error, ?backoff, operation = command.name(), "database unavailable; trying again");
                    metrics::counter!("videochat_store_unavailable_retries_total").increment(1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
                }
                result => return result,
            }
        }
    }

    async fn execute_once(
        &self,
        actor: &UserId,
        key: &IdempotencyKey,
        command: &Command,
        traceparent: &str,
    ) -> Result<Reply, HandshakeError> {
        for attempt in 1..=MAX_ATTEMPTS {
            let now = now_ms();
            // An accept of a ring rung here is decided from memory first (see `ringing`); any
            // other outcome than a committed acceptance is decided again from the database.
            let remembered = match command {
                Command::Accept { request } if attempt == 1 => {
                    self.ringing.accept_facts(request, now)
                }
                _ => None,
            };
            let from_memory = remembered.is_some();
            let mut facts = match remembered {
                Some(facts) => facts,
                None => self.store.load(actor, key, command, now).await?,
            };
            if let Some(record) = facts.idempotency.take() {
                return replay(record, command);
            }
            if !self.push_enabled() {
                // Without a push sender, registered devices do not make anyone reachable.
                facts.target_devices.clear();
            }
            let decision = match machine::decide(&facts, &self.context(now), actor, command) {
                Ok(decision) => decision,
                Err(_) if from_memory => {
                    metrics::counter!("videochat_accepts_from_memory_total", "result" => "refused")
                        .increment(1);
                    continue;
                }
                Err(
                    refusal @ (HandshakeError::TooManyPendingRings(_)
                    | HandshakeError::TooManyInvites(_)),
                ) => {
                    let limit = match refusal {
                        HandshakeError::TooManyPendingRings(_) => "pending_rings",
                        _ => "invites_per_videochat",
                    };
                    tracing::info!(limit, operation = command.name(), "limit reached");
                    metrics::counter!("videochat_limits_total", "limit" => limit).increment(1);
                    return Err(refusal);
                }
                Err(refusal) if refusal.is_decision() => {
                    self.record_refusal(actor, key, command, &refusal, now)
                        .await?;
                    return Err(refusal);
                }
                Err(error) => return Err(error),
            };
            let reply = serde_json::to_vec(&decision.reply)
                .map_err(|e| HandshakeError::invalid("reply", e))?;
            let record = IdempotencyRecord {
                user_id: actor.clone(),
                key: key.clone(),
                operation: command.name().to_owned(),
                outcome: RecordedOutcome::Reply(reply),
                created_at_ms: now,
            };
            let outbound = self.outbound(&decision.change, &facts, now);
            match self
                .write(&decision.change, Some(&record), &outbound, traceparent, now)
                .await
            {
                Ok(()) => {
                    if from_memory {
                        metrics::counter!("videochat_accepts_from_memory_total", "result" => "accepted")
                            .increment(1);
                    }
                    if let Some(ring) = &decision.change.new_request
                        && outbound.push_handoff.is_none()
                    {
                        self.ringing.remember(ring, &facts.users, now);
                    }
                    observe(&decision, command.name());
                    return Ok(decision.reply);
                }
                Err(StoreError::Stale | StoreError::Conflict) if from_memory => {
                    // The ring is not what this replica remembered (`write` forgot it): ask the
                    // database.
                    metrics::counter!("videochat_accepts_from_memory_total", "result" => "stale")
                        .increment(1);
                }
                Err(StoreError::Stale | StoreError::Conflict) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        operation = command.name(),
                        "facts went stale, deciding again"
                    );
                    metrics::counter!("videochat_store_conflicts_total", "operation" => command.name())
                        .increment(1);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(HandshakeError::Store(StoreError::Conflict))
    }

    /// Writes a change with its events and pushes the events to the gateways attached here.
    async fn write(
        &self,
        change: &Change,
        record: Option<&IdempotencyRecord>,
        outbound: &Outbound,
        traceparent: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        if let Some(finish) = &change.finish {
            // Ended (or about to, if this write commits): nothing to accept from memory.
            self.ringing.forget(&finish.request);
        }
        let (rows, mut events): (Vec<_>, Vec<pb::Event>) =
            change.events.iter().map(delivery::encode).unzip();
        let applied = self
            .store
            .apply(&Write {
                change,
                events: &rows,
                record,
                traceparent,
                now_ms: now,
                outbound,
            })
            .await?;
        if !outbound.deliveries.is_empty()
            && let Some(webhooks) = &self.webhooks
        {
            webhooks.committed(outbound, traceparent, now, applied.group.as_ref());
        }
        for ((event, row), seq) in events.iter_mut().zip(&rows).zip(applied.positions) {
            event.seq = seq;
            event.recipient_user_id = row.recipient.to_string();
            event.created_at = now;
            event.traceparent = traceparent.to_owned();
        }
        let gateways = self.hub.deliver(&events);
        metrics::counter!("videochat_events_pushed_total").increment(events.len() as u64);
        metrics::histogram!("videochat_push_gateways").record(gateways as f64);
        Ok(())
    }

    /// Records a refusal under the key so that a retry is refused the same way. If another
    /// attempt recorded something first, that record wins and this one is dropped.
    async fn record_refusal(
        &self,
        actor: &UserId,
        key: &IdempotencyKey,
        command: &Command,
        error: &HandshakeError,
        now: i64,
    ) -> Result<(), HandshakeError> {
        self.store
            .record_refusal(&IdempotencyRecord {
                user_id: actor.clone(),
                key: key.clone(),
                operation: command.name().to_owned(),
                outcome: RecordedOutcome::Error {
                    code: error.code() as i32,
                    message: error.to_string(),
                },
                created_at_ms: now,
            })
            .await?;
        Ok(())
    }

    /// Expires every ring past its timeout; returns how many.
    #[tracing::instrument(name = "handshake.expire_due", skip_all, level = "debug")]
    pub async fn expire_due(&self) -> Result<usize, HandshakeError> {
        let now = now_ms();
        let due = self.store.due_requests(now, 200).await?;
        let mut expired = 0;
        for ring in &due {
            let decision = machine::expire(&self.context(now), ring);
            let outbound = match &self.webhooks {
                Some(_) => {
                    let facts = self.expiry_facts(ring, now).await?;
                    self.outbound(&decision.change, &facts, now)
                }
                None => Outbound::default(),
            };
            match self.write(&decision.change, None, &outbound, "", now).await {
                Ok(()) => {
                    expired += 1;
                    observe(&decision, "expire");
                }
                // Answered, or expired by another replica, since it was read.
                Err(StoreError::Stale) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(expired)
    }

    pub async fn ringing_for(&self, user: &UserId) -> Result<Vec<Ring>, HandshakeError> {
        Ok(self.store.rings_for(user, now_ms()).await?)
    }

    pub async fn upsert_user(&self, user: &UserProfile) -> Result<(), HandshakeError> {
        Ok(self.store.upsert_user(user, now_ms()).await?)
    }

    /// The profile and whether the user is reachable now.
    pub async fn user(&self, id: &UserId) -> Result<(UserProfile, bool), HandshakeError> {
        self.store
            .user(id, now_ms())
            .await?
            .ok_or(HandshakeError::TargetUserNotFound)
    }

    /// A media engine's webhook about one of its rooms: verified as that engine signs it, then
    /// applied. A finished room ends its videochat, and invites into it still ringing are
    /// cancelled (both sides hear `reason: "cancelled"`).
    #[tracing::instrument(name = "handshake.engine_webhook", skip_all, fields(videochat.engine = engine))]
    pub async fn engine_webhook(
        &self,
        engine: &str,
        webhook: &Webhook<'_>,
    ) -> Result<(Received, bool), HandshakeError> {
        let received = self.events.receive(engine, webhook)?;
        let Some(event) = &received.event else {
            metrics::counter!("videochat_engine_events_total", "event" => received.name.clone(), "result" => "unused")
                .increment(1);
            return Ok((received, false));
        };
        let applied = self.store.apply_room_event(event).await?;
        let result = match &applied {
            RoomApplied::UnknownRoom => "unknown_room",
            RoomApplied::Over => "videochat_over",
            RoomApplied::Unchanged => "unchanged",
            RoomApplied::Applied { .. } => "applied",
        };
        tracing::info!(event = %received.name, room = %event.room, result, "engine event");
        metrics::counter!("videochat_engine_events_total", "event" => received.name.clone(), "result" => result)
            .increment(1);
        if let RoomApplied::Applied {
            videochat,
            finished: true,
        } = &applied
        {
            let now = now_ms();
            for ring in self.store.pending_invites(videochat).await? {
                let decision = machine::end_invite(&self.context(now), &ring);
                let outbound = match &self.webhooks {
                    Some(_) => {
                        let facts = self.expiry_facts(&ring, now).await?;
                        self.outbound(&decision.change, &facts, now)
                    }
                    None => Outbound::default(),
                };
                match self.write(&decision.change, None, &outbound, "", now).await {
                    Ok(()) => observe(&decision, "end_invite"),
                    // Answered or expired meanwhile.
                    Err(StoreError::Stale) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok((received, matches!(applied, RoomApplied::Applied { .. })))
    }

    /// A page of `user`'s call history (see [`crate::history`]).
    pub async fn list_calls(
        &self,
        user: &UserId,
        before: Option<i64>,
        limit: Option<u32>,
        acknowledge: bool,
    ) -> Result<CallPage, HandshakeError> {
        let limit = limit.unwrap_or(crate::history::DEFAULT_PAGE);
        if limit == 0 || limit > crate::history::MAX_PAGE {
            return Err(HandshakeError::invalid(
                "limit",
                format!("must be 1 to {}", crate::history::MAX_PAGE),
            ));
        }
        Ok(self
            .store
            .list_calls(user, before, limit, acknowledge, now_ms())
            .await?)
    }

    /// Starts a videochat owned by `owner`, for internal services (conferences).
    pub async fn create_videochat(
        &self,
        owner: &UserId,
        mode: VideochatMode,
        engine: Option<EngineKind>,
    ) -> Result<JoinCredentials, HandshakeError> {
        let now = now_ms();
        let facts = self.store.load_owner(owner).await?;
        let (credentials, change) =
            machine::create_videochat(&facts, &self.context(now), owner, mode, engine)?;
        self.write(&change, None, &Outbound::default(), "", now)
            .await?;
        Ok(credentials)
    }

    /// What an expiry's webhooks need to know: the ring and both users' profiles (read only
    /// when webhooks are configured; expiry is off the handshake path).
    async fn expiry_facts(
        &self,
        ring: &crate::domain::VideochatRequest,
        now: i64,
    ) -> Result<crate::change::Facts, HandshakeError> {
        let mut users = Vec::with_capacity(2);
        for id in [&ring.initiator, &ring.target] {
            if let Some((profile, _)) = self.store.user(id, now).await? {
                users.push(profile);
            }
        }
        let request_pushed_to = if self.push_enabled() {
            self.store.pushed_devices(&ring.id).await?
        } else {
            None
        };
        Ok(crate::change::Facts {
            users,
            request: Some(ring.clone()),
            request_pushed_to,
            ..crate::change::Facts::default()
        })
    }

    /// Registers one of `user`'s devices for push.
    pub async fn register_push_device(
        &self,
        user: &UserId,
        device: &crate::domain::PushDevice,
    ) -> Result<(), HandshakeError> {
        Ok(self
            .store
            .register_push_device(user, device, now_ms())
            .await?)
    }

    /// Forgets one of `user`'s devices; false if there was none with that token.
    pub async fn unregister_push_device(
        &self,
        user: &UserId,
        token: &crate::domain::PushToken,
    ) -> Result<bool, HandshakeError> {
        Ok(self.store.unregister_push_device(user, token).await?)
    }
}

fn replay(record: IdempotencyRecord, command: &Command) -> Result<Reply, HandshakeError> {
    if record.operation != command.name() {
        return Err(HandshakeError::IdempotencyKeyReused {
            key: record.key.to_string(),
            operation: record.operation,
        });
    }
    metrics::counter!("videochat_idempotent_replays_total", "operation" => command.name())
        .increment(1);
    match record.outcome {
        RecordedOutcome::Reply(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| HandshakeError::invalid("idempotency record", e)),
        RecordedOutcome::Error { code, message } => Err(HandshakeError::Replayed {
            code: ErrorCode::from_i32(code).unwrap_or(ErrorCode::Internal),
            message,
        }),
    }
}

/// Operation counters and the ring-to-answer latency.
fn observe(decision: &Decision, operation: &'static str) {
    metrics::counter!("videochat_operations_total", "operation" => operation).increment(1);
    for outgoing in &decision.change.events {
        metrics::counter!("videochat_events_emitted_total", "event" => outgoing.event.name())
            .increment(1);
    }
    if let Some((status, ring_ms)) = decision.ended {
        let outcome_label = match status {
            RequestStatus::Accepted => "accepted",
            RequestStatus::Declined => "declined",
            RequestStatus::Cancelled => "cancelled",
            RequestStatus::Expired => "timeout",
            RequestStatus::Merged => "merged",
            RequestStatus::Pending => "pending",
        };
        metrics::counter!("videochat_request_outcomes_total", "outcome" => outcome_label)
            .increment(1);
        metrics::histogram!("videochat_ring_to_answer_seconds", "outcome" => outcome_label)
            .record(ring_ms.max(0) as f64 / 1000.0);
    }
}
