//! Storage: everything the handshake knows lives here, behind one trait, [`Store`].
//!
//! An operation costs two statements: [`Store::load`] reads the [`Facts`] a decision needs in one
//! query, and [`Store::apply`] writes the decided [`Change`] — its rows, its events (the outbox)
//! and its idempotency record — atomically, guarded so that a write on stale facts changes
//! nothing and says so ([`StoreError::Stale`], [`StoreError::Conflict`]).
//!
//! Events are numbered per recipient: each user has a mailbox whose `last_seq` a write bumps
//! under the row's lock, so one user's positions commit in order while writers for different
//! users never wait on each other (no instance-wide lock, no global sequence).
//!
//! Two backends implement the trait: Postgres for production ([`postgres`]: the write is one
//! statement with data-modifying CTEs), SQLite as the embedded default ([`sqlite`]: one writer
//! connection that commits concurrent writes together). The load queries are shared ([`facts`]);
//! the behaviour tests run unchanged on both.

mod calls;
mod facts;
#[cfg(test)]
mod migrations_tests;
pub(crate) mod postgres;
#[cfg(test)]
mod prune_tests;
mod rows;
#[cfg(test)]
mod scratch;
mod sqlite;
pub mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::change::{Change, Facts};
use crate::domain::{
    ConnectionId, GatewayId, IdempotencyKey, RequestId, Ring, UserId, UserPatch, UserProfile,
    VideochatId, VideochatRequest,
};
use crate::machine::Command;

pub use crate::change::{IdempotencyRecord, RecordedOutcome};
pub use calls::RoomApplied;

use crate::engine::events::RoomEvent;
use crate::history::{CallEntry, CallPage};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use webhooks::{GroupRef, Outbound, WebhookStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A concurrent transaction changed the same rows (unique violation, serialization failure,
    /// deadlock). The caller loads, decides and writes again.
    #[error("conflicting concurrent change")]
    Conflict,
    /// A guard of the write failed: the ring was answered (or timed out) since it was read.
    /// Nothing was written; the caller loads, decides and writes again.
    #[error("the facts changed since they were read")]
    Stale,
    /// A row holds a value this version of the service cannot read.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// The database could not be reached, or dropped the connection (restart, failover,
    /// network). Nothing is known to have been written; retrying is safe (a write that did
    /// commit left its idempotency record, which the retry finds).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid DATABASE_URL: {0}")]
    Url(String),
    /// SQLite's committer thread could not be started (the process is out of threads).
    #[error("cannot start the SQLite committer: {0}")]
    Committer(#[source] std::io::Error),
    /// The Postgres store's hot-path thread could not be started (out of threads), or ended
    /// while starting (`store/postgres/hot.rs`).
    #[error("cannot start the store's hot-path thread: {0}")]
    Thread(#[source] std::io::Error),
    /// An error of SQLite's committer connection (`store/sqlite/commit.rs`).
    #[error("database error: {0}")]
    Sqlite(#[source] rusqlite::Error),
}

impl StoreError {
    /// The same error for another operation of a failed batch (errors do not clone): its kind
    /// is kept — a conflict stays retryable, an unreachable database stays `Unavailable`.
    pub(crate) fn for_another(&self) -> StoreError {
        match self {
            StoreError::Conflict => StoreError::Conflict,
            StoreError::Stale => StoreError::Stale,
            StoreError::Unavailable(e) => {
                StoreError::Unavailable(sqlx::Error::Protocol(e.to_string()))
            }
            other => StoreError::Database(sqlx::Error::Protocol(other.to_string())),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            // Postgres: serialization_failure, deadlock_detected.
            let retryable_pg = matches!(db.code().as_deref(), Some("40001") | Some("40P01"));
            if db.is_unique_violation() || retryable_pg {
                return StoreError::Conflict;
            }
            // Postgres: admin_shutdown, crash_shutdown, cannot_connect_now, connection
            // exceptions (class 08).
            let gone = db
                .code()
                .is_some_and(|c| c.starts_with("57P") || c.starts_with("08"));
            if gone {
                postgres::suspect_connections();
                return StoreError::Unavailable(e);
            }
        }
        if matches!(
            e,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::WorkerCrashed
        ) {
            postgres::suspect_connections();
            return StoreError::Unavailable(e);
        }
        StoreError::Database(e)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An event to write with the change that causes it.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub recipient: UserId,
    /// The event's name (a column for people reading the table).
    pub kind: &'static str,
    /// The encoded event (protobuf `Event` with only its `kind` set).
    pub payload: Vec<u8>,
}

/// What [`Store::apply`] answers for a committed write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The mailbox position of each of the write's events, in order.
    pub positions: Vec<u64>,
    /// The group the write's webhooks were committed in, `None` if it had none or its store
    /// writes a row per delivery (SQLite).
    pub group: Option<GroupRef>,
}

/// One decided operation, ready to be written.
pub struct Write<'a> {
    pub change: &'a Change,
    /// The change's events, encoded, in the order of `change.events`.
    pub events: &'a [NewEvent],
    /// The answer to record under the operation's idempotency key.
    pub record: Option<&'a IdempotencyRecord>,
    pub traceparent: &'a str,
    pub now_ms: i64,
    /// Webhooks to send for the change, written in its transaction.
    pub outbound: &'a Outbound,
}

impl Write<'_> {
    /// The write, owned: for a committer that outlives the caller's borrow (SQLite's committer
    /// thread, Postgres's batched statement).
    pub(crate) fn to_owned_write(&self) -> OwnedWrite {
        OwnedWrite {
            change: self.change.clone(),
            events: self.events.to_vec(),
            record: self.record.cloned(),
            traceparent: self.traceparent.to_owned(),
            now_ms: self.now_ms,
            outbound: self.outbound.clone(),
        }
    }
}

/// An owned [`Write`].
#[derive(Clone, Debug)]
pub(crate) struct OwnedWrite {
    pub change: Change,
    pub events: Vec<NewEvent>,
    pub record: Option<IdempotencyRecord>,
    pub traceparent: String,
    pub now_ms: i64,
    pub outbound: Outbound,
}

/// An event read back from the outbox.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub recipient: UserId,
    pub seq: u64,
    pub payload: Vec<u8>,
    pub traceparent: String,
    pub created_at_ms: i64,
}

/// Events other replicas committed, read in transaction order (see [`Store::follow`]).
#[derive(Debug, Default)]
pub struct Followed {
    /// Where the next read starts: every transaction below it has been read.
    pub cursor: u64,
    pub events: Vec<StoredEvent>,
}

/// A socket a gateway reports as opened.
#[derive(Clone, Debug)]
pub struct OpenedSocket {
    pub connection: ConnectionId,
    pub user: UserId,
    pub profile: UserPatch,
    /// The last position the client says it saw (`lastEventId`), if it sent one.
    pub resume_after: Option<u64>,
}

/// What a newly registered socket must know.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    /// The user already held the most sockets allowed across the cluster: the socket was not
    /// recorded (nor its profile claims applied), and the other fields are empty.
    pub refused: bool,
    /// The user's newest mailbox position: the socket gets the events after it.
    pub last_seq: u64,
    /// The newest position a gateway reported delivered to some socket of the user.
    pub seen_seq: u64,
    /// The rings ringing for the user now.
    pub rings: Vec<Ring>,
}

/// One user's events after `after`, up to and including `through`.
#[derive(Clone, Debug)]
pub struct EventRange {
    pub user: UserId,
    pub after: u64,
    pub through: u64,
}

/// A user's state now, for a client whose event history is gone (`videochat:resync`).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Rings ringing for the user.
    pub incoming: Vec<Ring>,
    /// The user's own pending rings.
    pub outgoing: Vec<OutgoingRing>,
    /// The videochats the user is in, newest first (at most [`SNAPSHOT_VIDEOCHATS`]).
    pub videochats: Vec<VideochatSummary>,
}

/// Most videochats a snapshot lists.
pub const SNAPSHOT_VIDEOCHATS: i64 = 20;

#[derive(Clone, Debug)]
pub struct OutgoingRing {
    pub request_id: RequestId,
    pub target: UserProfile,
    pub videochat_id: Option<VideochatId>,
    pub expires_at_ms: i64,
}

#[derive(Clone, Debug)]
pub struct VideochatSummary {
    pub id: VideochatId,
    /// Up to 10 participants.
    pub participants: Vec<UserProfile>,
    pub counter: u32,
}

/// The database.
#[async_trait]
pub trait Store: WebhookStore + Send + Sync + 'static {
    /// Everything `command` needs to be decided for `actor`, in one query.
    async fn load(
        &self,
        actor: &UserId,
        key: &IdempotencyKey,
        command: &Command,
        now_ms: i64,
    ) -> StoreResult<Facts>;

    /// The facts for starting a videochat owned by `owner` (their profile).
    async fn load_owner(&self, owner: &UserId) -> StoreResult<Facts>;

    /// Writes a decided change with its events, webhooks and idempotency record, atomically.
    /// Returns the mailbox positions given to the events, in order, and the group its webhooks
    /// were written in. Fails with [`StoreError::Stale`] when
    /// the change's ring was no longer pending, [`StoreError::Conflict`] when a racing change
    /// took a unique key first; either way nothing was written.
    async fn apply(&self, write: &Write<'_>) -> StoreResult<Applied>;

    /// Records a refusal under its idempotency key; false if the key already had a record.
    async fn record_refusal(&self, record: &IdempotencyRecord) -> StoreResult<bool>;

    /// Records sockets a gateway opened (the users become available) and applies their
    /// just-in-time profiles, all in one transaction; returns what each socket must be told.
    /// A socket whose user would then hold more than `max_per_user` live sockets (on gateways
    /// with a live lease, this batch's earlier sockets included) is refused and changes nothing.
    /// Two replicas registering the same user's sockets at the same instant may each let one
    /// through: the cap is exact per replica and approximate across replicas.
    async fn register_sockets(
        &self,
        gateway: &GatewayId,
        opened: &[OpenedSocket],
        max_per_user: u32,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Vec<Registration>>;

    /// Forgets closed sockets.
    async fn close_sockets(&self, connections: &[ConnectionId]) -> StoreResult<()>;

    /// A gateway (re)attached holding exactly `sockets`: its presence rows become that set and
    /// its lease is renewed.
    async fn attach_gateway(
        &self,
        gateway: &GatewayId,
        sockets: &[(ConnectionId, UserId)],
        lease_until_ms: i64,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// Renews a gateway's presence lease. False if the gateway is not known (its lease ran out
    /// and its sockets were swept): it must attach again, stating its sockets.
    async fn renew_gateway_lease(&self, gateway: &GatewayId, until_ms: i64) -> StoreResult<bool>;

    /// Forgets sockets of gateways whose lease ran out before `before_ms`.
    async fn sweep_dead_gateways(&self, before_ms: i64) -> StoreResult<u64>;

    /// The events in each range still kept, in order per user.
    async fn events_in(&self, ranges: &[EventRange]) -> StoreResult<Vec<StoredEvent>>;

    /// Records that each user's events up to the position were delivered to some socket
    /// (positions only move forward).
    async fn mark_seen(&self, seen: &[(UserId, u64)]) -> StoreResult<()>;

    /// The user's rings and videochats now.
    async fn snapshot(&self, user: &UserId, now_ms: i64) -> StoreResult<Snapshot>;

    /// Events that other replicas (origin other than this store's) committed in transactions at
    /// or above `cursor`, up to the oldest transaction still running; `None` starts at that
    /// horizon. Only Postgres has other replicas; SQLite returns nothing.
    async fn follow(&self, cursor: Option<u64>) -> StoreResult<Followed>;

    /// Pending rings whose timeout passed, oldest first.
    async fn due_requests(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<VideochatRequest>>;

    /// The earliest timeout among pending rings.
    async fn next_expiry(&self) -> StoreResult<Option<i64>>;

    /// The rings ringing for `user` now, as the user is shown them.
    async fn rings_for(&self, user: &UserId, now_ms: i64) -> StoreResult<Vec<Ring>>;

    async fn upsert_user(&self, user: &UserProfile, now_ms: i64) -> StoreResult<()>;

    /// The profile, and whether the user is reachable now.
    async fn user(&self, id: &UserId, now_ms: i64) -> StoreResult<Option<(UserProfile, bool)>>;

    /// Deletes outbox events, idempotency records and (ended) rings created before the given
    /// instants; rings are the call history.
    async fn prune(
        &self,
        events_before_ms: i64,
        idempotency_before_ms: i64,
        history_before_ms: i64,
    ) -> StoreResult<u64>;

    /// Applies what a media engine reported about a room: a participant joined or left (late
    /// and repeated reports change nothing), or the room finished (the videochat ends and
    /// everyone is out).
    async fn apply_room_event(&self, event: &RoomEvent) -> StoreResult<RoomApplied>;

    /// Invites into the videochat still ringing.
    async fn pending_invites(&self, videochat: &VideochatId) -> StoreResult<Vec<VideochatRequest>>;

    /// A page of the user's calls before `before`, newest first, with how many calls they
    /// missed since they last listed; with `acknowledge`, this listing becomes the last.
    async fn list_calls(
        &self,
        user: &UserId,
        before: Option<i64>,
        limit: u32,
        acknowledge: bool,
        now_ms: i64,
    ) -> StoreResult<CallPage>;

    /// For each user who missed calls since they last listed: how many, and the newest few.
    /// Users who missed none are left out.
    async fn missed_calls(
        &self,
        users: &[UserId],
        now_ms: i64,
    ) -> StoreResult<Vec<(UserId, u32, Vec<CallEntry>)>>;

    /// Changes when another replica announced new events (Postgres LISTEN); followers read then.
    fn outbox_signal(&self) -> watch::Receiver<u64>;

    /// Human-readable backend name for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// Up to 10 participants of a videochat (as ring and snapshot frames show them) and how many
/// it has; the same SQL on both backends.
pub(crate) async fn participants_of<DB>(
    pool: &sqlx::Pool<DB>,
    videochat: &str,
) -> StoreResult<(Vec<UserProfile>, u32)>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
    for<'r> rows::UserRow: sqlx::FromRow<'r, DB::Row>,
{
    let people: Vec<rows::UserRow> = sqlx::query_as(
        "SELECT p.user_id, COALESCE(u.first_name, ''), COALESCE(u.last_name, ''), COALESCE(u.privacy_mode, 0), \
         COALESCE(u.avatar, ''), u.avatar_3d, COALESCE(u.company_name, ''), COALESCE(u.company_title, '') \
         FROM participants p LEFT JOIN users u ON u.id = p.user_id \
         WHERE p.videochat_id = $1 AND p.left_at_ms IS NULL ORDER BY p.uid LIMIT $2",
    )
    .bind(videochat)
    .bind(crate::machine::MAX_RING_PARTICIPANTS)
    .fetch_all(pool)
    .await?;
    let (count,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM participants WHERE videochat_id = $1 AND left_at_ms IS NULL",
    )
    .bind(videochat)
    .fetch_one(pool)
    .await?;
    Ok((
        people
            .into_iter()
            .map(rows::user_from_row)
            .collect::<StoreResult<_>>()?,
        u32::try_from(count).unwrap_or(u32::MAX),
    ))
}

/// `$1` user, `$2` now: the rings `$1` placed that are still ringing, with whom they ring.
pub(crate) const OUTGOING_RINGS: &str = "SELECT r.id, r.videochat_id, r.expires_at_ms, r.target_id, \
     COALESCE(u.first_name, ''), COALESCE(u.last_name, ''), COALESCE(u.privacy_mode, 0), \
     COALESCE(u.avatar, ''), u.avatar_3d, COALESCE(u.company_name, ''), COALESCE(u.company_title, '') \
     FROM videochat_requests r LEFT JOIN users u ON u.id = r.target_id \
     WHERE r.initiator_id = $1 AND r.status = 'pending' AND r.expires_at_ms > $2 \
     ORDER BY r.created_at_ms, r.id";

/// Reads the parts of a [`Snapshot`] that both backends read with the same SQL.
pub(crate) async fn snapshot_from<DB>(
    pool: &sqlx::Pool<DB>,
    user: &UserId,
    now_ms: i64,
    incoming: Vec<Ring>,
) -> StoreResult<Snapshot>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> rows::OutgoingRow: sqlx::FromRow<'r, DB::Row>,
    for<'r> (String,): sqlx::FromRow<'r, DB::Row>,
    for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
    for<'r> rows::UserRow: sqlx::FromRow<'r, DB::Row>,
{
    let outgoing: Vec<rows::OutgoingRow> = sqlx::query_as(OUTGOING_RINGS)
        .bind(user.as_str())
        .bind(now_ms)
        .fetch_all(pool)
        .await?;
    let videochats: Vec<(String,)> = sqlx::query_as(
        "SELECT v.id FROM participants p JOIN videochats v ON v.id = p.videochat_id \
         WHERE p.user_id = $1 AND p.left_at_ms IS NULL AND v.ended_at_ms IS NULL \
         ORDER BY v.created_at_ms DESC, v.id LIMIT $2",
    )
    .bind(user.as_str())
    .bind(SNAPSHOT_VIDEOCHATS)
    .fetch_all(pool)
    .await?;
    let mut summaries = Vec::with_capacity(videochats.len());
    for (id,) in videochats {
        let (participants, counter) = participants_of(pool, &id).await?;
        summaries.push(VideochatSummary {
            id: rows::videochat_id(id)?,
            participants,
            counter,
        });
    }
    Ok(Snapshot {
        incoming,
        outgoing: outgoing
            .into_iter()
            .map(rows::outgoing_from_row)
            .collect::<StoreResult<_>>()?,
        videochats: summaries,
    })
}

/// Opens the store for a `DATABASE_URL` (`postgres://…` or `sqlite://…`) and applies
/// migrations. `origin` names this replica in the outbox.
pub async fn connect(url: &str, max_connections: u32, origin: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PostgresStore::connect(url, max_connections, origin).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, origin).await?))
    } else {
        Err(StoreError::Url(format!(
            "{url:?} is neither postgres:// nor sqlite:"
        )))
    }
}

/// Applies pending migrations without starting anything (`videochat migrate`).
pub async fn migrate(url: &str) -> StoreResult<&'static str> {
    let store = connect(url, 1, "migrate").await?;
    Ok(store.backend())
}

/// A user's (newest, seen) mailbox positions among `(user, last_seq, seen_seq)` rows; zeros for
/// a user without a mailbox yet.
pub(crate) fn positions_of(rows: &[(String, i64, i64)], user: &UserId) -> (u64, u64) {
    rows.iter()
        .find(|(u, _, _)| u == user.as_str())
        .map(|(_, last, seen)| {
            (
                u64::try_from(*last).unwrap_or_default(),
                u64::try_from(*seen).unwrap_or_default(),
            )
        })
        .unwrap_or_default()
}

/// What each socket of a registered batch is told: refused unless `accepted`, otherwise its
/// user's positions (`(user, last_seq, seen_seq)` rows) and rings.
pub(crate) fn registrations(
    opened: &[OpenedSocket],
    accepted: &[&OpenedSocket],
    positions: &[(String, i64, i64)],
    rings: &[(UserId, Ring)],
) -> Vec<Registration> {
    opened
        .iter()
        .map(|socket| {
            if !accepted.iter().any(|a| a.connection == socket.connection) {
                return Registration {
                    refused: true,
                    ..Registration::default()
                };
            }
            let (last_seq, seen_seq) = positions_of(positions, &socket.user);
            Registration {
                refused: false,
                last_seq,
                seen_seq,
                rings: rings
                    .iter()
                    .filter(|(target, _)| target == &socket.user)
                    .map(|(_, ring)| ring.clone())
                    .collect(),
            }
        })
        .collect()
}

/// The users with missed calls among `(user, count)` rows, with their counts.
pub(crate) fn missed_counts(counts: Vec<(String, i64)>) -> StoreResult<Vec<(UserId, u32)>> {
    counts
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(user, count)| {
            Ok((
                rows::user_id(user)?,
                u32::try_from(count).unwrap_or(u32::MAX),
            ))
        })
        .collect()
}

/// A watch channel used as a level-triggered "something new" signal.
pub(crate) fn signal() -> (watch::Sender<u64>, watch::Receiver<u64>) {
    watch::channel(0)
}

pub(crate) fn bump(sender: &watch::Sender<u64>) {
    sender.send_modify(|v| *v = v.wrapping_add(1));
}

/// The positions given to `events` by a write that left each recipient's mailbox at `last_seq`:
/// a recipient's events take the last positions, in order.
pub(crate) fn positions(events: &[NewEvent], last_seqs: &[(String, i64)]) -> StoreResult<Vec<u64>> {
    let mut remaining: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for event in events {
        *remaining.entry(event.recipient.as_str()).or_default() += 1;
    }
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let recipient = event.recipient.as_str();
        let last = last_seqs
            .iter()
            .find(|(user, _)| user == recipient)
            .map(|(_, seq)| *seq)
            .ok_or_else(|| StoreError::Corrupt {
                table: "mailboxes",
                detail: format!("no position returned for {recipient}"),
            })?;
        let left = remaining.get_mut(recipient).map(|n| {
            *n -= 1;
            *n
        });
        let seq = last - left.unwrap_or_default();
        out.push(u64::try_from(seq).unwrap_or_default());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(to: &str) -> NewEvent {
        NewEvent {
            recipient: UserId::parse(to).unwrap(),
            kind: "x",
            payload: Vec::new(),
        }
    }

    #[test]
    fn a_recipients_events_take_the_last_positions_in_order() {
        let events = [event("a"), event("b"), event("a")];
        let last = [("a".to_owned(), 7), ("b".to_owned(), 3)];
        assert_eq!(positions(&events, &last).unwrap(), vec![6, 3, 7]);
    }
}
