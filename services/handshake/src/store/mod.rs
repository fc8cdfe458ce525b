//! Storage: everything the handshake knows lives here, behind [`Store`] (pool-level work) and
//! [`StoreTx`] (one transaction of the state machine).
//!
//! Two sqlx implementations share one body of SQL ([`sql`]): Postgres for production, SQLite as
//! the embedded default. The state machine only ever sees the traits, so the behaviour tests run
//! unchanged on both.

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::domain::{
    ConnectionId, GatewayId, IdempotencyKey, Participant, Permissions, RequestId, RequestStatus,
    UserId, UserPatch, UserProfile, Videochat, VideochatId, VideochatRequest,
};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A concurrent transaction changed the same rows (unique violation, serialization failure,
    /// deadlock). The caller retries the whole operation.
    #[error("conflicting concurrent change")]
    Conflict,
    /// A row holds a value this version of the service cannot read.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid DATABASE_URL: {0}")]
    Url(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            // Postgres: serialization_failure, deadlock_detected.
            let retryable_pg = matches!(db.code().as_deref(), Some("40001") | Some("40P01"));
            if db.is_unique_violation() || retryable_pg {
                return StoreError::Conflict;
            }
        }
        StoreError::Database(e)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What was answered the first time a user sent an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub user_id: UserId,
    pub key: IdempotencyKey,
    /// The operation's name, so a key reused for another operation is noticed.
    pub operation: String,
    pub outcome: RecordedOutcome,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordedOutcome {
    /// The reply, serialized.
    Reply(Vec<u8>),
    /// An application error: the contract code and message.
    Error { code: i32, message: String },
}

/// An event to append to the outbox in the transaction that caused it.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_id: String,
    pub recipient: UserId,
    /// The serialized [`crate::domain::Event`].
    pub payload: Vec<u8>,
    pub traceparent: String,
    pub created_at_ms: i64,
}

/// An event read back from the outbox.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub seq: u64,
    pub event_id: String,
    pub recipient: UserId,
    pub payload: Vec<u8>,
    pub traceparent: String,
    pub created_at_ms: i64,
}

/// One transaction. Dropping it without [`StoreTx::commit`] rolls it back.
#[async_trait]
pub trait StoreTx: Send {
    async fn user(&mut self, id: &UserId) -> StoreResult<Option<UserProfile>>;
    async fn upsert_user(&mut self, user: &UserProfile, now_ms: i64) -> StoreResult<()>;
    /// Creates the user if unknown, then applies the fields the patch sets.
    async fn patch_user(&mut self, id: &UserId, patch: &UserPatch, now_ms: i64) -> StoreResult<()>;
    /// At least one socket connected on a gateway whose presence lease is alive.
    async fn is_available(&mut self, id: &UserId, now_ms: i64) -> StoreResult<bool>;

    async fn request(&mut self, id: &RequestId) -> StoreResult<Option<VideochatRequest>>;
    /// The pending direct request between two users, in either direction.
    async fn pending_direct_between(
        &mut self,
        a: &UserId,
        b: &UserId,
    ) -> StoreResult<Option<VideochatRequest>>;
    /// The pending invite of a user into a videochat.
    async fn pending_invite(
        &mut self,
        videochat: &VideochatId,
        target: &UserId,
    ) -> StoreResult<Option<VideochatRequest>>;
    /// Fails with [`StoreError::Conflict`] if the pair (or invitee) already has a pending request.
    async fn insert_request(&mut self, request: &VideochatRequest) -> StoreResult<()>;
    /// Moves a pending request to `status`; false if it was no longer pending.
    async fn finish_request(
        &mut self,
        id: &RequestId,
        status: RequestStatus,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Requests ringing for `target` at `now_ms`, oldest first.
    async fn ringing_for(
        &mut self,
        target: &UserId,
        now_ms: i64,
    ) -> StoreResult<Vec<VideochatRequest>>;
    /// Pending requests whose ring timed out at `now_ms`, oldest first.
    async fn due_requests(&mut self, now_ms: i64, limit: i64)
    -> StoreResult<Vec<VideochatRequest>>;

    async fn insert_videochat(&mut self, videochat: &Videochat) -> StoreResult<()>;
    async fn videochat(&mut self, id: &VideochatId) -> StoreResult<Option<Videochat>>;
    async fn participant(
        &mut self,
        videochat: &VideochatId,
        user: &UserId,
    ) -> StoreResult<Option<Participant>>;
    /// Adds a participant with the next free `uid` of the videochat.
    async fn add_participant(
        &mut self,
        videochat: &VideochatId,
        user: &UserId,
        permissions: Permissions,
        now_ms: i64,
    ) -> StoreResult<Participant>;
    async fn participant_count(&mut self, videochat: &VideochatId) -> StoreResult<u32>;
    /// Profiles of the first `limit` participants, in joining order.
    async fn participant_profiles(
        &mut self,
        videochat: &VideochatId,
        limit: i64,
    ) -> StoreResult<Vec<UserProfile>>;

    async fn idempotency_record(
        &mut self,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    /// Fails with [`StoreError::Conflict`] if the key was recorded concurrently.
    async fn record_idempotency(&mut self, record: &IdempotencyRecord) -> StoreResult<()>;

    /// Appends events to the outbox. They become visible to readers, in order, at commit.
    async fn append_events(&mut self, events: &[NewEvent]) -> StoreResult<()>;

    async fn upsert_gateway_lease(
        &mut self,
        gateway: &GatewayId,
        expires_at_ms: i64,
    ) -> StoreResult<()>;
    async fn open_connection(
        &mut self,
        connection: &ConnectionId,
        user: &UserId,
        gateway: &GatewayId,
        now_ms: i64,
    ) -> StoreResult<()>;

    async fn commit(self: Box<Self>) -> StoreResult<()>;
}

/// The database: transactions, presence bookkeeping, and the outbox reader.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn begin(&self) -> StoreResult<Box<dyn StoreTx + '_>>;

    async fn close_connection(&self, connection: &ConnectionId) -> StoreResult<()>;
    /// Renews a gateway's presence lease.
    async fn renew_gateway_lease(&self, gateway: &GatewayId, expires_at_ms: i64)
    -> StoreResult<()>;
    /// Forgets connections of gateways whose lease ran out before `before_ms`.
    async fn sweep_dead_gateways(&self, before_ms: i64) -> StoreResult<u64>;

    /// The newest outbox position, 0 when empty.
    async fn latest_seq(&self) -> StoreResult<u64>;
    /// Events in `(after, upto]` for users with a socket on `gateway`, in order.
    async fn events_for_gateway(
        &self,
        gateway: &GatewayId,
        after: u64,
        upto: u64,
        limit: i64,
    ) -> StoreResult<Vec<StoredEvent>>;
    /// The earliest ring timeout among pending requests.
    async fn next_expiry(&self) -> StoreResult<Option<i64>>;
    /// Deletes outbox events and idempotency records created before the given instants.
    async fn prune(&self, events_before_ms: i64, idempotency_before_ms: i64) -> StoreResult<u64>;

    /// Changes whenever new outbox events may have committed (here or, for Postgres, on any
    /// replica). Readers re-query on change; the value itself means nothing.
    fn outbox_signal(&self) -> watch::Receiver<u64>;

    /// Human-readable backend name for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// Opens the store for a `DATABASE_URL` (`postgres://…` or `sqlite://…`) and applies migrations.
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PostgresStore::connect(url, max_connections).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::Url(format!(
            "{url:?} is neither postgres:// nor sqlite:"
        )))
    }
}

/// Applies pending migrations without starting anything (`videochat migrate`).
pub async fn migrate(url: &str) -> StoreResult<&'static str> {
    let store = connect(url, 1).await?;
    Ok(store.backend())
}

/// A watch channel used as a level-triggered "something new" signal.
pub(crate) fn signal() -> (watch::Sender<u64>, watch::Receiver<u64>) {
    watch::channel(0)
}

pub(crate) fn bump(sender: &watch::Sender<u64>) {
    sender.send_modify(|v| *v = v.wrapping_add(1));
}
