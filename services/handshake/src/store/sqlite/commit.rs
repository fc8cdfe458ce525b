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

use super::checkpoint::WRITER_AUTOCHECKPOINT_PAGES;
use crate::domain::VideochatRequest;
use crate::store::webhooks::{NewDelivery, Settle, encode_devices};
use crate::store::{IdempotencyRecord, OwnedWrite, StoreError, StoreResult};

/// A write handed to the committer, and where its answer goes.
pub(super) struct Waiting {
    pub write: OwnedWrite,
    pub done: oneshot::Sender<StoreResult<Vec<u64>>>,
}

/// How attempts at webhook deliveries ended, to be recorded (deleted when delivered), and where
/// the answer goes. They ride along with the next batch of writes: recorded in its transaction,
/// rather than in one of their own on sqlx's writer, which took the write lock from the
/// committer and synced the log once more every time (`bench/profile.sh` with webhooks on).
pub(super) struct Settling {
    pub settled: Vec<(String, Settle)>,
    pub now_ms: i64,
    pub done: oneshot::Sender<StoreResult<()>>,
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
    settles: Vec<Settling>,
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

    /// Queues `write`. If the thread is gone, the write is dropped unwritten: its caller's
    /// answer channel closes, which it reads as a conflict and retries, and then fails.
    pub(super) fn submit(&self, write: Waiting) {
        self.enqueue(|state| state.writes.push(write));
    }

    /// Queues outcomes of webhook attempts; dropped unrecorded if the thread is gone (their
    /// leases run out and they are sent again: at-least-once).
    pub(super) fn settle(&self, settling: Settling) {
        self.enqueue(|state| state.settles.push(settling));
    }

    /// Adds work for the thread and wakes it, unless it stopped (the work is then dropped).
    fn enqueue(&self, add: impl FnOnce(&mut State)) {
        let mut state = self.queue.state();
        if state.stopped {
            return;
        }
        add(&mut state);
        drop(state);
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
    // answered; rings and participants reference their videochat.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    connection.busy_timeout(Duration::from_secs(5))?;
    // Each write of a batch runs in a savepoint, whose journal of changed pages is otherwise a
    // temporary file: a write(2) per page per savepoint (a fifth of this thread's time, measured
    // with `bench/profile.sh`). Its pages are few, and the WAL is what makes a commit durable.
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run on the checkpointer's thread, not between this thread's batches.
    connection.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

/// Marks the queue stopped when the thread ends, however it ends: a thread that died (a panic)
/// then refuses new writes at once, and drops those it left, rather than leaving their callers
/// waiting for an answer that never comes.
struct Ended<'a>(&'a Queue);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.stopped = true;
        if std::thread::panicking() {
            tracing::error!(
                writes = state.writes.len(),
                "the SQLite committer stopped; writes fail until the service restarts"
            );
        }
        state.writes.clear();
        state.settles.clear();
    }
}

/// The thread: waits for writes, commits all that are waiting, answers each.
fn run(mut connection: Connection, queue: &Queue, lock: &Mutex<SqliteConnection>, origin: &str) {
    let _ended = Ended(queue);
    loop {
        let (batch, settles) = {
            let mut state = queue.state();
            while state.writes.is_empty() && state.settles.is_empty() && !state.stopped {
                state = queue
                    .ready
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.writes.is_empty() && state.settles.is_empty() {
                return;
            }
            (
                std::mem::take(&mut state.writes),
                std::mem::take(&mut state.settles),
            )
        };
        let (results, settled) = {
            let _writer = lock.blocking_lock();
            commit_batch(&mut connection, &batch, &settles, origin)
        };
        metrics::histogram!("videochat_store_group_commit_size").record(batch.len() as f64);
        for (waiting, result) in batch.into_iter().zip(results) {
            let _ = waiting.done.send(result);
        }
        for (settling, result) in settles.into_iter().zip(settled) {
            let _ = settling.done.send(result);
        }
    }
}

/// A batch's answers: one per write (the positions of its events), one per settling.
type Answers = (Vec<StoreResult<Vec<u64>>>, Vec<StoreResult<()>>);

/// Commits `batch` in one transaction, with the webhook outcomes of `settles`; one result per
/// write and per settling. A lone write needs no savepoint.
fn commit_batch(
    connection: &mut Connection,
    batch: &[Waiting],
    settles: &[Settling],
    origin: &str,
) -> Answers {
    let outcome = (|| -> rusqlite::Result<Answers> {
        let mut tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        if let ([only], []) = (batch, settles) {
            let result = write_one(&tx, &only.write, origin);
            let written = result.is_ok();
            results.push(result);
            if written {
                tx.commit()?;
            }
            return Ok((results, Vec::new()));
        }
        for waiting in batch {
            let savepoint = tx.savepoint()?;
            let result = write_one(&savepoint, &waiting.write, origin);
            if result.is_ok() {
                savepoint.commit()?;
            } else {
                // Rolls back to the savepoint and releases it.
                savepoint.finish()?;
            }
            results.push(result);
        }
        let mut settled = Vec::with_capacity(settles.len());
        for settling in settles {
            let savepoint = tx.savepoint()?;
            let result = settle(&savepoint, &settling.settled, settling.now_ms);
            if result.is_ok() {
                savepoint.commit()?;
            } else {
                savepoint.finish()?;
            }
            settled.push(result);
        }
        tx.commit()?;
        Ok((results, settled))
    })();
    match outcome {
        Ok(results) => results,
        Err(error) => {
            tracing::warn!(%error, writes = batch.len(), "SQLite commit failed");
            let failed =
                || StoreError::Database(sqlx::Error::Protocol(format!("commit failed: {error}")));
            (
                batch.iter().map(|_| Err(failed())).collect(),
                settles.iter().map(|_| Err(failed())).collect(),
            )
        }
    }
}

/// Records how webhook attempts ended: delivered rows are deleted (in one statement), others
/// scheduled again or marked failed. Rows no longer pending (an operator's retry of a failed
/// one meanwhile) are left alone.
fn settle(connection: &Connection, settled: &[(String, Settle)], now_ms: i64) -> StoreResult<()> {
    let delivered: Vec<&str> = settled
        .iter()
        .filter(|(_, s)| *s == Settle::Delivered)
        .map(|(id, _)| id.as_str())
        .collect();
    if !delivered.is_empty() {
        connection
            .prepare_cached(
                "DELETE FROM webhook_deliveries WHERE id IN (SELECT value FROM json_each(?1))",
            )?
            .execute([serde_json::Value::from(delivered).to_string()])?;
    }
    for (id, outcome) in settled {
        match outcome {
            Settle::Delivered => {}
            Settle::Retry {
                next_attempt_at_ms,
                error,
            } => {
                connection
                    .prepare_cached(
                        "UPDATE webhook_deliveries SET next_attempt_at_ms = ?2, last_error = ?3 \
                         WHERE id = ?1 AND status = 'pending'",
                    )?
                    .execute(params![id, next_attempt_at_ms, error])?;
            }
            Settle::Failed { error } => {
                connection
                    .prepare_cached(
                        "UPDATE webhook_deliveries SET status = 'failed', last_error = ?2, \
                         failed_at_ms = ?3 WHERE id = ?1 AND status = 'pending'",
                    )?
                    .execute(params![id, error, now_ms])?;
            }
        }
    }
    Ok(())
}

/// One write's statements, inside the committer's transaction.
fn write_one(connection: &Connection, write: &OwnedWrite, origin: &str) -> StoreResult<Vec<u64>> {
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
                 engine, status, pair_key, created_at_ms, expires_at_ms, push_handoff_at_ms, \
                 push_devices) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10, ?11)",
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
                write.outbound.push_handoff.as_ref().map(|_| now),
                write.outbound.push_handoff.as_deref().map(encode_devices),
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
    insert_deliveries(
        connection,
        &write.outbound.deliveries,
        &write.traceparent,
        now,
    )?;
    Ok(positions)
}

/// Takes the next positions of each recipient's mailbox and appends the events there; returns
/// each event's position, in the order of `write.events`.
fn append_events(
    connection: &Connection,
    write: &OwnedWrite,
    origin: &str,
) -> StoreResult<Vec<u64>> {
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

/// Inserts a write's deliveries, inside its transaction.
fn insert_deliveries(
    connection: &Connection,
    deliveries: &[NewDelivery],
    traceparent: &str,
    now_ms: i64,
) -> StoreResult<()> {
    for delivery in deliveries {
        connection
            .prepare_cached(
                "INSERT INTO webhook_deliveries (id, endpoint, event_type, payload, created_at_ms, \
                 next_attempt_at_ms, attempts, status, traceparent) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
            )?
            .execute(params![
                delivery.id,
                delivery.endpoint,
                delivery.event_type,
                delivery.payload,
                now_ms,
                delivery.leased_until_ms.unwrap_or(now_ms),
                i64::from(delivery.leased_until_ms.is_some()),
                traceparent,
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

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::ConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;
    use crate::change::{Change, Finish, RecordedOutcome};
    use crate::domain::{IdempotencyKey, RequestId, RequestKind, RequestStatus, UserId};
    use crate::engine::EngineKind;
    use crate::store::{NewEvent, Outbound};

    /// A migrated database file of its own, opened as the committer opens it.
    async fn database(name: &str) -> (tempfile_path::Path, Connection) {
        let path = tempfile_path::Path::new(name);
        let mut migrating =
            SqliteConnectOptions::from_str(&format!("sqlite://{}", path.0.display()))
                .unwrap()
                .create_if_missing(true)
                .connect()
                .await
                .unwrap();
        super::super::MIGRATOR.run(&mut migrating).await.unwrap();
        let connection = open(&path.0).unwrap();
        (path, connection)
    }

    /// A file path removed (with its WAL) when the test ends.
    mod tempfile_path {
        pub struct Path(pub std::path::PathBuf);
        impl Path {
            pub fn new(name: &str) -> Self {
                let unique = format!(
                    "videochat-commit-{name}-{}-{}.db",
                    std::process::id(),
                    uuid::Uuid::now_v7().simple()
                );
                Self(std::env::temp_dir().join(unique))
            }
        }
        impl Drop for Path {
            fn drop(&mut self) {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = self.0.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
        }
    }

    fn ring(id: &str, from: &str, to: &str) -> VideochatRequest {
        VideochatRequest {
            id: RequestId::parse(id).unwrap(),
            kind: RequestKind::Direct,
            initiator: UserId::parse(from).unwrap(),
            target: UserId::parse(to).unwrap(),
            videochat_id: None,
            engine: EngineKind::Livekit,
            status: RequestStatus::Pending,
            created_at_ms: 1_000,
            expires_at_ms: 61_000,
        }
    }

    fn waiting(
        change: Change,
        key: Option<(&str, &str)>,
    ) -> (Waiting, oneshot::Receiver<StoreResult<Vec<u64>>>) {
        let (done, answer) = oneshot::channel();
        let events = change
            .new_request
            .iter()
            .map(|r| NewEvent {
                recipient: r.target.clone(),
                kind: "videochatRequested",
                payload: vec![1, 2, 3],
            })
            .collect();
        let record = key.map(|(user, key)| IdempotencyRecord {
            user_id: UserId::parse(user).unwrap(),
            key: IdempotencyKey::parse(key).unwrap(),
            operation: "requestDirectVideochat".into(),
            outcome: RecordedOutcome::Reply(vec![9]),
            created_at_ms: 1_000,
        });
        let write = Waiting {
            write: OwnedWrite {
                change,
                events,
                record,
                traceparent: String::new(),
                now_ms: 1_000,
                outbound: Outbound::default(),
            },
            done,
        };
        (write, answer)
    }

    fn new_ring(id: &str, from: &str, to: &str) -> Change {
        Change {
            new_request: Some(ring(id, from, to)),
            ..Change::default()
        }
    }

    fn count(connection: &Connection, sql: &str) -> i64 {
        connection.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    #[tokio::test]
    async fn a_write_whose_ring_was_answered_rolls_back_alone_and_the_batch_commits() {
        let (_path, mut connection) = database("stale").await;
        let (first, _) = waiting(new_ring("vcr_1", "alice", "bob"), Some(("alice", "k1")));
        // Answers a ring that does not exist (answered and pruned, say): its guard fails after
        // its videochat was inserted, which must go with it.
        let stale = Change {
            new_videochat: Some(crate::domain::Videochat {
                id: crate::domain::VideochatId::parse("vc_stale").unwrap(),
                mode: crate::domain::VideochatMode::Videochat,
                engine: EngineKind::Livekit,
                room: "room".into(),
                shared_secret: "secret".into(),
                created_at_ms: 1_000,
                ended_at_ms: None,
            }),
            finish: Some(Finish {
                request: RequestId::parse("vcr_gone").unwrap(),
                status: RequestStatus::Accepted,
                ringing_at: Some(1_000),
                videochat: None,
            }),
            new_request: Some(ring("vcr_2", "carol", "dave")),
            ..Change::default()
        };
        let (second, _) = waiting(stale, Some(("carol", "k2")));
        let (third, _) = waiting(new_ring("vcr_3", "erin", "frank"), None);
        let (results, _) = commit_batch(&mut connection, &[first, second, third], &[], "test");
        assert_eq!(results[0].as_ref().unwrap(), &vec![1]);
        assert!(
            matches!(results[1], Err(StoreError::Stale)),
            "{:?}",
            results[1]
        );
        assert_eq!(results[2].as_ref().unwrap(), &vec![1]);
        assert_eq!(
            count(&connection, "SELECT COUNT(*) FROM videochat_requests"),
            2
        );
        assert_eq!(
            count(
                &connection,
                "SELECT COUNT(*) FROM videochat_requests WHERE id = 'vcr_2'"
            ),
            0
        );
        assert_eq!(count(&connection, "SELECT COUNT(*) FROM videochats"), 0);
        assert_eq!(
            count(&connection, "SELECT COUNT(*) FROM idempotency_records"),
            1
        );
        assert_eq!(count(&connection, "SELECT COUNT(*) FROM outbox_events"), 2);
    }

    #[tokio::test]
    async fn a_taken_key_is_a_conflict_and_a_lone_failed_write_leaves_nothing() {
        let (_path, mut connection) = database("conflict").await;
        let (first, _) = waiting(new_ring("vcr_1", "alice", "bob"), None);
        assert!(commit_batch(&mut connection, &[first], &[], "test").0[0].is_ok());
        // A second pending ring for the same pair: the partial unique index refuses it.
        let (again, _) = waiting(new_ring("vcr_2", "bob", "alice"), None);
        let (results, _) = commit_batch(&mut connection, &[again], &[], "test");
        assert!(
            matches!(results[0], Err(StoreError::Conflict)),
            "{:?}",
            results[0]
        );
        assert_eq!(
            count(&connection, "SELECT COUNT(*) FROM videochat_requests"),
            1
        );
        assert_eq!(count(&connection, "SELECT COUNT(*) FROM outbox_events"), 1);
        assert_eq!(
            count(
                &connection,
                "SELECT last_seq FROM mailboxes WHERE user_id = 'bob'"
            ),
            1
        );
    }

    #[tokio::test]
    async fn a_commit_that_fails_fails_every_write_of_its_batch() {
        let (_path, mut connection) = database("commit").await;
        // Foreign keys checked at COMMIT, and a write that breaks one: each statement passes,
        // the commit does not.
        connection
            .pragma_update(None, "defer_foreign_keys", true)
            .unwrap();
        let mut dangling = new_ring("vcr_1", "alice", "bob");
        if let Some(r) = dangling.new_request.as_mut() {
            r.videochat_id = Some(crate::domain::VideochatId::parse("vc_missing").unwrap());
        }
        let (first, _) = waiting(dangling, None);
        let (second, _) = waiting(new_ring("vcr_2", "carol", "dave"), None);
        let (results, _) = commit_batch(&mut connection, &[first, second], &[], "test");
        for result in &results {
            assert!(matches!(result, Err(StoreError::Database(_))), "{result:?}");
        }
        assert_eq!(
            count(&connection, "SELECT COUNT(*) FROM videochat_requests"),
            0
        );
    }

    fn delivery_row(connection: &Connection, id: &str) {
        connection
            .execute(
                "INSERT INTO webhook_deliveries (id, endpoint, event_type, payload, created_at_ms, \
                 next_attempt_at_ms, attempts, status) \
                 VALUES (?1, 'http://h/', 'call.requested', '{}', 1000, 6000, 1, 'pending')",
                [id],
            )
            .unwrap();
    }

    fn settling(settled: Vec<(&str, Settle)>) -> (Settling, oneshot::Receiver<StoreResult<()>>) {
        let (done, answer) = oneshot::channel();
        (
            Settling {
                settled: settled
                    .into_iter()
                    .map(|(id, s)| (id.to_owned(), s))
                    .collect(),
                now_ms: 2_000,
                done,
            },
            answer,
        )
    }

    #[tokio::test]
    async fn webhook_outcomes_ride_a_batch_of_writes_or_commit_alone() {
        let (_path, mut connection) = database("settle").await;
        for id in ["msg_a", "msg_b", "msg_c", "msg_d"] {
            delivery_row(&connection, id);
        }
        let (write, _) = waiting(new_ring("vcr_1", "alice", "bob"), None);
        let (outcomes, _) = settling(vec![
            ("msg_a", Settle::Delivered),
            ("msg_b", Settle::Delivered),
            (
                "msg_c",
                Settle::Retry {
                    next_attempt_at_ms: 9_000,
                    error: "answered HTTP 500".into(),
                },
            ),
        ]);
        let (results, settled) = commit_batch(&mut connection, &[write], &[outcomes], "test");
        assert!(results[0].is_ok());
        assert!(settled[0].is_ok());
        assert_eq!(
            count(&connection, "SELECT COUNT(*) FROM videochat_requests"),
            1
        );
        assert_eq!(
            count(&connection, "SELECT COUNT(*) FROM webhook_deliveries"),
            2,
            "the delivered ones are gone"
        );
        assert_eq!(
            count(
                &connection,
                "SELECT next_attempt_at_ms FROM webhook_deliveries WHERE id = 'msg_c'"
            ),
            9_000
        );
        // Outcomes with no write waiting commit on their own.
        let (alone, _) = settling(vec![(
            "msg_d",
            Settle::Failed {
                error: "too old".into(),
            },
        )]);
        let (results, settled) = commit_batch(&mut connection, &[], &[alone], "test");
        assert!(results.is_empty());
        assert!(settled[0].is_ok());
        assert_eq!(
            count(
                &connection,
                "SELECT failed_at_ms FROM webhook_deliveries WHERE id = 'msg_d' AND status = 'failed'"
            ),
            2_000
        );
    }

    #[tokio::test]
    async fn outcomes_that_cannot_be_recorded_fail_alone_and_the_writes_commit() {
        let (_path, mut connection) = database("settle-fails").await;
        // Nowhere to record them: every settle statement fails.
        connection
            .execute_batch("DROP TABLE webhook_deliveries")
            .unwrap();
        let (write, _) = waiting(new_ring("vcr_1", "alice", "bob"), None);
        let (outcomes, _) = settling(vec![("msg_a", Settle::Delivered)]);
        let (results, settled) = commit_batch(&mut connection, &[write], &[outcomes], "test");
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(
            matches!(settled[0], Err(StoreError::Sqlite(_))),
            "{:?}",
            settled[0]
        );
        assert_eq!(
            count(&connection, "SELECT COUNT(*) FROM videochat_requests"),
            1
        );
    }

    #[tokio::test]
    async fn writes_after_the_thread_ended_fail_instead_of_waiting() {
        let queue = Arc::new(Queue {
            state: std::sync::Mutex::new(State::default()),
            ready: Condvar::new(),
        });
        let ended = queue.clone();
        let _ = std::thread::spawn(move || {
            let _ended = Ended(&ended);
            panic!("the committer fails");
        })
        .join();
        let committer = Committer { queue };
        let (write, answer) = waiting(new_ring("vcr_1", "alice", "bob"), None);
        committer.submit(write);
        assert!(
            answer.await.is_err(),
            "the write was dropped, not left waiting"
        );
        let (outcomes, answer) = settling(vec![("msg_a", Settle::Delivered)]);
        committer.settle(outcomes);
        assert!(
            answer.await.is_err(),
            "the outcomes were dropped, not left waiting"
        );
    }
}
