//! The handshake service's core, below gRPC: runs state-machine commands in transactions with
//! idempotency, retries on conflicting concurrent changes, and writes the outbox.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::domain::{
    ConnectionId, GatewayId, IdempotencyKey, JoinCredentials, Outgoing, RequestStatus, Ring,
    UserId, UserPatch, UserProfile, VideochatMode,
};
use crate::engine::{EngineKind, Engines};
use crate::error::{ErrorCode, HandshakeError};
use crate::machine::{self, Command, Context, Outcome, Reply};
use crate::store::{IdempotencyRecord, NewEvent, RecordedOutcome, Store, StoreTx};

/// How often an operation is retried after losing a race to a concurrent change.
const MAX_ATTEMPTS: usize = 8;

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
    ring_timeout: Duration,
    presence_lease: Duration,
}

impl Handshake {
    pub fn new(
        store: Arc<dyn Store>,
        engines: Arc<Engines>,
        ring_timeout: Duration,
        presence_lease: Duration,
    ) -> Self {
        Self {
            store,
            engines,
            ring_timeout,
            presence_lease,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn presence_lease(&self) -> Duration {
        self.presence_lease
    }

    fn context(&self) -> Context<'_> {
        Context {
            engines: &self.engines,
            ring_timeout: self.ring_timeout,
            now_ms: now_ms(),
        }
    }

    /// Runs `command` for `actor` exactly once per idempotency key: a retry with the same key
    /// gets the first answer (reply or application error) and changes nothing.
    #[tracing::instrument(name = "handshake.execute", skip_all, fields(videochat.operation = command.name(), videochat.user = %actor))]
    pub async fn execute(
        &self,
        actor: &UserId,
        key: &IdempotencyKey,
        command: &Command,
        traceparent: &str,
    ) -> Result<Reply, HandshakeError> {
        for attempt in 1..=MAX_ATTEMPTS {
            match self.attempt(actor, key, command, traceparent).await {
                Err(e) if e.is_conflict() && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, operation = command.name(), "conflict, retrying");
                    metrics::counter!("videochat_store_conflicts_total", "operation" => command.name())
                        .increment(1);
                    continue;
                }
                Err(e) if e.is_decision() => {
                    self.record_decision(actor, key, command, &e).await?;
                    return Err(e);
                }
                other => return other,
            }
        }
        Err(HandshakeError::Store(crate::store::StoreError::Conflict))
    }

    async fn attempt(
        &self,
        actor: &UserId,
        key: &IdempotencyKey,
        command: &Command,
        traceparent: &str,
    ) -> Result<Reply, HandshakeError> {
        let ctx = self.context();
        let mut tx = self.store.begin().await?;
        if let Some(record) = tx.idempotency_record(actor, key).await? {
            return replay(record, command);
        }
        let outcome = machine::apply(tx.as_mut(), &ctx, actor, command).await?;
        let reply =
            serde_json::to_vec(&outcome.reply).map_err(|e| HandshakeError::invalid("reply", e))?;
        append(tx.as_mut(), &outcome.events, traceparent, ctx.now_ms).await?;
        tx.record_idempotency(&IdempotencyRecord {
            user_id: actor.clone(),
            key: key.clone(),
            operation: command.name().to_owned(),
            outcome: RecordedOutcome::Reply(reply),
            created_at_ms: ctx.now_ms,
        })
        .await?;
        tx.commit().await?;
        observe(&outcome, command.name());
        Ok(outcome.reply)
    }

    /// Records a refusal under the key so that a retry is refused the same way. If another
    /// attempt recorded something first, that record wins and this one is dropped.
    async fn record_decision(
        &self,
        actor: &UserId,
        key: &IdempotencyKey,
        command: &Command,
        error: &HandshakeError,
    ) -> Result<(), HandshakeError> {
        let mut tx = self.store.begin().await?;
        let recorded = tx
            .record_idempotency(&IdempotencyRecord {
                user_id: actor.clone(),
                key: key.clone(),
                operation: command.name().to_owned(),
                outcome: RecordedOutcome::Error {
                    code: error.code() as i32,
                    message: error.to_string(),
                },
                created_at_ms: now_ms(),
            })
            .await;
        match recorded {
            Ok(()) => Ok(tx.commit().await?),
            Err(crate::store::StoreError::Conflict) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Expires every ring past its timeout; returns how many.
    #[tracing::instrument(name = "handshake.expire_due", skip_all, level = "debug")]
    pub async fn expire_due(&self) -> Result<usize, HandshakeError> {
        let ctx = self.context();
        let mut tx = self.store.begin().await?;
        let due = tx.due_requests(ctx.now_ms, 200).await?;
        let mut expired = 0;
        for ring in &due {
            let outcome = machine::expire(tx.as_mut(), &ctx, ring).await?;
            if outcome.ended.is_some() {
                expired += 1;
            }
            append(tx.as_mut(), &outcome.events, "", ctx.now_ms).await?;
            observe(&outcome, "expire");
        }
        tx.commit().await?;
        Ok(expired)
    }

    /// A gateway accepted a socket: the user is present, their token's profile claims apply,
    /// and the rings already under way for them are returned for the new socket.
    pub async fn open_connection(
        &self,
        gateway: &GatewayId,
        connection: &ConnectionId,
        user: &UserId,
        profile: &UserPatch,
    ) -> Result<Vec<Ring>, HandshakeError> {
        let now = now_ms();
        let lease_until = now + self.lease_ms();
        let mut tx = self.store.begin().await?;
        tx.upsert_gateway_lease(gateway, lease_until).await?;
        tx.patch_user(user, profile, now).await?;
        tx.open_connection(connection, user, gateway, now).await?;
        let rings = machine::ringing_for(tx.as_mut(), user, now).await?;
        tx.commit().await?;
        Ok(rings)
    }

    pub async fn close_connection(&self, connection: &ConnectionId) -> Result<(), HandshakeError> {
        Ok(self.store.close_connection(connection).await?)
    }

    /// Registers the sockets a (re)attached gateway holds and renews its lease.
    pub async fn attach_gateway(
        &self,
        gateway: &GatewayId,
        connections: &[(ConnectionId, UserId)],
    ) -> Result<(), HandshakeError> {
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        tx.upsert_gateway_lease(gateway, now + self.lease_ms())
            .await?;
        for (connection, user) in connections {
            tx.patch_user(user, &UserPatch::default(), now).await?;
            tx.open_connection(connection, user, gateway, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn renew_gateway(&self, gateway: &GatewayId) -> Result<(), HandshakeError> {
        Ok(self
            .store
            .renew_gateway_lease(gateway, now_ms() + self.lease_ms())
            .await?)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.presence_lease.as_millis()).unwrap_or(i64::MAX / 2)
    }

    pub async fn ringing_for(&self, user: &UserId) -> Result<Vec<Ring>, HandshakeError> {
        let mut tx = self.store.begin().await?;
        let rings = machine::ringing_for(tx.as_mut(), user, now_ms()).await?;
        tx.commit().await?;
        Ok(rings)
    }

    pub async fn upsert_user(&self, user: &UserProfile) -> Result<(), HandshakeError> {
        let mut tx = self.store.begin().await?;
        tx.upsert_user(user, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The profile and whether the user is reachable now.
    pub async fn user(&self, id: &UserId) -> Result<(UserProfile, bool), HandshakeError> {
        let mut tx = self.store.begin().await?;
        let user = tx
            .user(id)
            .await?
            .ok_or(HandshakeError::TargetUserNotFound)?;
        let available = tx.is_available(id, now_ms()).await?;
        tx.commit().await?;
        Ok((user, available))
    }

    /// Starts a videochat owned by `owner`, for internal services (conferences).
    pub async fn create_videochat(
        &self,
        owner: &UserId,
        mode: VideochatMode,
        engine: Option<EngineKind>,
    ) -> Result<JoinCredentials, HandshakeError> {
        let ctx = self.context();
        let mut tx = self.store.begin().await?;
        let credentials = machine::create_videochat(tx.as_mut(), &ctx, owner, mode, engine).await?;
        tx.commit().await?;
        Ok(credentials)
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

async fn append(
    tx: &mut dyn StoreTx,
    events: &[Outgoing],
    traceparent: &str,
    now_ms: i64,
) -> Result<(), HandshakeError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(events.len());
    for outgoing in events {
        rows.push(NewEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            recipient: outgoing.recipient.clone(),
            payload: serde_json::to_vec(&outgoing.event)
                .map_err(|e| HandshakeError::invalid("event", e))?,
            traceparent: traceparent.to_owned(),
            created_at_ms: now_ms,
        });
    }
    tx.append_events(&rows).await?;
    Ok(())
}

/// Request outcome counters and the ring-to-answer latency.
fn observe(outcome: &Outcome, operation: &'static str) {
    metrics::counter!("videochat_operations_total", "operation" => operation).increment(1);
    for outgoing in &outcome.events {
        metrics::counter!("videochat_events_emitted_total", "event" => outgoing.event.name())
            .increment(1);
    }
    if let Some((status, ring_ms)) = outcome.ended {
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
