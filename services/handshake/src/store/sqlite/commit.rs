//! SQLite's committer: the thread that writes every handshake.
//!
//! SQLite takes one writer at a time, and every commit is a sync of its write-ahead log. So
//! [`Store::apply`](crate::store::Store::apply) hands its write to this thread, which commits
//! whatever writes are waiting in one transaction, each in a savepoint of its own (a write that
//! fails a guard rolls back alone): under load one log sync serves many handshakes.
//!
//! Why a thread with its own connection (rusqlite) rather than a task on sqlx's: a write is a
//! dozen statements, and through sqlx each is a hop between the calling task and the
//! connection's worker thread. Under load the committer task waited behind the sockets' and
//! RPCs' tasks at every hop, so the one writer sat idle between statements while every
//! handshake queued behind it (`bench/profile.sh`: a third of both cores idle, the writer busy a
//! third of its time; moving the task to a thread of its own made it worse, since each hop then
//! woke a sleeping thread). Here a batch runs start to end on one thread, from cached prepared
//! statements, and wakes the callers once.
//!
//! The store's other writes (sockets, presence, pruning) stay on sqlx's writer connection. Both
//! connections write under the same lock, so they never meet SQLite's busy timeout.

use std::path::Path;
use std::sync::{Arc, Condvar};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{Mutex, oneshot};

use crate::change::Change;
use crate::domain::VideochatRequest;
use crate::store::webhooks::NewDelivery;
use crate::store::{IdempotencyRecord, NewEvent, Outbound, StoreError, StoreResult};

/// A write handed to the committer, owned so that it outlives the caller's borrow.
pub(super) struct Waiting {
    pub change: Change,
    pub events: Vec<NewEvent>,
    pub record: Option<IdempotencyRecord>,
    pub traceparent: String,
    pub now_ms: i64,
    pub outbound: Outbound,
    pub done: oneshot::Sender<StoreResult<Vec<u64>>>,
}

/// Hands writes to the committer thread; dropping it stops the thread once the writes already
/// handed over are committed.
pub(super) struct Committer {
    queue: Arc<Queue>,
}

struct Queue {
    state: std::sync::Mutex<State>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    writes: Vec<Waiting>,
    stopped: bool,
}

impl Queue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section is one push, one take or one flag: a panic cannot leave it
        // half done.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Committer {
    /// Opens the committer's connection to the database file at `path` (migrated already) and
    /// starts its thread. `lock` is the store's writer lock, held for each batch.
    pub(super) fn start(
        path: &Path,
        lock: Arc<Mutex<SqliteConnection>>,
        origin: String,
    ) -> StoreResult<Self> {
        let connection = open(path).map_err(StoreError::from)?;
        let queue = Arc::new(Queue {
            state: std::sync::Mutex::new(State::default()),
            ready: Condvar::new(),
        });
        let thread_queue = queue.clone();
        std::thread::Builder::new()
            .name("sqlite-commit".into())
            .spawn(move || run(connection, &thread_queue, &lock, &origin))
            .map_err(StoreError::Committer)?;
        Ok(Self { queue })
    }

    pub(super) fn submit(&self, write: Waiting) {
        self.queue.state().writes.push(write);
        self.queue.ready.notify_one();
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.queue.state().stopped = true;
        self.queue.ready.notify_one();
    }
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    // The same settings as the store's sqlx connections: every commit is on disk before it is
    // answered; rings reference users and videochats.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

/// The thread: waits for writes, commits all that are waiting, answers each.
fn run(mut connection: Connection, queue: &Queue, lock: &Mutex<SqliteConnection>, origin: &str) {
    loop {
        let batch = {
            let mut state = queue.state();
            while state.writes.is_empty() && !state.stopped {
                state = queue
                    .ready
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.writes.is_empty() {
                return;
            }
            std::mem::take(&mut state.writes)
        };
        let results = {
            let _writer = lock.blocking_lock();
            commit_batch(&mut connection, &batch, origin)
        };
        metrics::histogram!("videochat_store_group_commit_size").record(batch.len() as f64);
        for (waiting, result) in batch.into_iter().zip(results) {
            let _ = waiting.done.send(result);
        }
    }
}

/// Commits `batch` in one transaction; one result per write. A lone write needs no savepoint.
fn commit_batch(
    connection: &mut Connection,
    batch: &[Waiting],
    origin: &str,
) -> Vec<StoreResult<Vec<u64>>> {
    let outcome = (|| -> rusqlite::Result<Vec<StoreResult<Vec<u64>>>> {
        let mut tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        if let [only] = batch {
            let result = write_one(&tx, only, origin);
            let written = result.is_ok();
            results.push(result);
            if written {
                tx.commit()?;
            }
            return Ok(results);
        }
        for waiting in batch {
            let savepoint = tx.savepoint()?;
            let result = write_one(&savepoint, waiting, origin);
            if result.is_ok() {
                savepoint.commit()?;
            } else {
                // Rolls back to the savepoint and releases it.
                savepoint.finish()?;
            }
            results.push(result);
        }
        tx.commit()?;
        Ok(results)
    })();
    match outcome {
        Ok(results) => results,
        Err(error) => {
            tracing::warn!(%error, writes = batch.len(), "SQLite commit failed");
            batch
                .iter()
                .map(|_| {
                    Err(StoreError::Database(sqlx::Error::Protocol(format!(
                        "commit failed: {error}"
                    ))))
                })
                .collect()
        }
    }
}

/// One write's statements, inside the committer's transaction.
fn write_one(connection: &Connection, write: &Waiting, origin: &str) -> StoreResult<Vec<u64>> {
    let change = &write.change;
    let now = write.now_ms;
    // The videochat first: the finished ring names it, and a ring that was no longer pending
    // rolls it back with the rest of this write.
    if let Some(v) = &change.new_videochat {
        connection
            .prepare_cached(
                "INSERT INTO videochats (id, mode, engine, room, shared_secret, created_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                v.id.as_str(),
                v.mode.as_str(),
                v.engine.as_str(),
                v.room,
                v.shared_secret,
                now
            ])?;
    }
    if let Some(finish) = &change.finish {
        let finished = connection
            .prepare_cached(
                "UPDATE videochat_requests SET status = ?2, answered_at_ms = ?3, \
                 videochat_id = COALESCE(?5, videochat_id) \
                 WHERE id = ?1 AND status = 'pending' AND (?4 IS NULL OR expires_at_ms > ?4)",
            )?
            .execute(params![
                finish.request.as_str(),
                finish.status.as_str(),
                now,
                finish.ringing_at,
                finish.videochat.as_ref().map(|v| v.as_str()),
            ])?;
        if finished != 1 {
            return Err(StoreError::Stale);
        }
    }
    if let Some(r) = &change.new_request {
        connection
            .prepare_cached(
                "INSERT INTO videochat_requests (id, kind, initiator_id, target_id, videochat_id, \
                 engine, status, pair_key, created_at_ms, expires_at_ms, push_handoff_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                r.id.as_str(),
                r.kind.as_str(),
                r.initiator.as_str(),
                r.target.as_str(),
                r.videochat_id.as_ref().map(|v| v.as_str()),
                r.engine.as_str(),
                VideochatRequest::pair_key(&r.initiator, &r.target),
                r.created_at_ms,
                r.expires_at_ms,
                write.outbound.push_handoff.then_some(now),
            ])?;
    }
    for p in &change.new_participants {
        connection
            .prepare_cached(
                "INSERT INTO participants (videochat_id, user_id, uid, permissions, joined_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                p.videochat_id.as_str(),
                p.user_id.as_str(),
                i64::from(p.uid),
                p.permissions.to_bits(),
                now
            ])?;
    }
    for p in &change.rejoined {
        connection
            .prepare_cached(
                "UPDATE participants SET left_at_ms = NULL WHERE videochat_id = ?1 AND user_id = ?2",
            )?
            .execute(params![p.videochat_id.as_str(), p.user_id.as_str()])?;
    }
    let positions = append_events(connection, write, origin)?;
    if let Some(record) = &write.record {
        insert_record(connection, record)?;
    }
    insert_deliveries(connection, &write.outbound.deliveries, now)?;
    Ok(positions)
}

/// Takes the next positions of each recipient's mailbox and appends the events there; returns
/// each event's position, in the order of `write.events`.
fn append_events(connection: &Connection, write: &Waiting, origin: &str) -> StoreResult<Vec<u64>> {
    let mut recipients: Vec<(&str, i64)> = Vec::new();
    for event in &write.events {
        match recipients
            .iter_mut()
            .find(|(r, _)| *r == event.recipient.as_str())
        {
            Some((_, n)) => *n += 1,
            None => recipients.push((event.recipient.as_str(), 1)),
        }
    }
    // The same order in every transaction, so two writes never wait on each other's mailboxes.
    recipients.sort_unstable();
    let mut last_seqs = Vec::with_capacity(recipients.len());
    for (recipient, count) in recipients {
        let last: i64 = connection
            .prepare_cached(
                "INSERT INTO mailboxes (user_id, last_seq) VALUES (?1, ?2) \
                 ON CONFLICT (user_id) DO UPDATE SET last_seq = last_seq + excluded.last_seq \
                 RETURNING last_seq",
            )?
            .query_row(params![recipient, count], |row| row.get(0))?;
        last_seqs.push((recipient.to_owned(), last));
    }
    let positions = crate::store::positions(&write.events, &last_seqs)?;
    let mut insert = connection.prepare_cached(
        "INSERT INTO outbox_events (recipient_user_id, seq, kind, payload, traceparent, \
         created_at_ms, origin) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (event, seq) in write.events.iter().zip(&positions) {
        insert.execute(params![
            event.recipient.as_str(),
            i64::try_from(*seq).unwrap_or(i64::MAX),
            event.kind,
            event.payload,
            write.traceparent,
            write.now_ms,
            origin
        ])?;
    }
    Ok(positions)
}

/// Fails with a unique violation ([`StoreError::Conflict`]) if the key already has a record.
fn insert_record(connection: &Connection, record: &IdempotencyRecord) -> StoreResult<()> {
    let (reply, code, message) = record.outcome.columns();
    connection
        .prepare_cached(super::INSERT_RECORD)?
        .execute(params![
            record.user_id.as_str(),
            record.key.as_str(),
            record.operation,
            reply,
            code,
            message,
            record.created_at_ms
        ])?;
    Ok(())
}

/// Inserts a write's deliveries, inside its transaction. A `push.cancel` is kept only if its
/// ring was handed to push.
fn insert_deliveries(
    connection: &Connection,
    deliveries: &[NewDelivery],
    now_ms: i64,
) -> StoreResult<()> {
    for delivery in deliveries {
        connection
            .prepare_cached(
                "INSERT INTO webhook_deliveries (id, endpoint, event_type, payload, created_at_ms, \
                 next_attempt_at_ms, attempts, status) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?7, ?8, 'pending' \
                 WHERE ?6 IS NULL OR EXISTS (SELECT 1 FROM videochat_requests \
                                             WHERE id = ?6 AND push_handoff_at_ms IS NOT NULL)",
            )?
            .execute(params![
                delivery.id,
                delivery.endpoint,
                delivery.event_type,
                delivery.payload,
                now_ms,
                delivery.only_if_pushed.as_ref().map(|r| r.as_str()),
                delivery.leased_until_ms.unwrap_or(now_ms),
                i64::from(delivery.leased_until_ms.is_some()),
            ])?;
    }
    Ok(())
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match error.sqlite_error_code() {
            // A unique key taken by a concurrent write (a ring for the same pair, an idempotency
            // key): the caller loads the facts again and decides anew.
            Some(ErrorCode::ConstraintViolation)
                if matches!(
                    error.sqlite_error().map(|e| e.extended_code),
                    Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
                        | Some(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
                ) =>
            {
                StoreError::Conflict
            }
            _ => StoreError::Sqlite(error),
        }
    }
}
