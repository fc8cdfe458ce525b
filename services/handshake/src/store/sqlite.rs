//! SQLite: the embedded default, one file, one process, one replica.
//!
//! Handshakes are written by the committer thread ([`commit`]), which commits the writes waiting
//! in one transaction. The store's other writes (sockets, presence, pruning) take the same lock
//! on sqlx's writer connection. Reads (the facts of a decision, rings, replays) run on a small
//! pool of reader connections, which in WAL mode never wait for the writer.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Mutex, oneshot, watch};

use super::calls::{self, RoomApplied};
use super::facts::{self, FactRow, Param};
use super::rows::{RequestRow, UserRow, avatar_3d_json, requests_from_rows, user_from_row};
use super::{
    Applied, EventRange, Followed, IdempotencyRecord, OpenedSocket, Registration, Snapshot, Store,
    StoreError, StoreResult, StoredEvent, Write, snapshot_from,
};
use crate::change::Facts;
use crate::domain::{
    ConnectionId, GatewayId, IdempotencyKey, Ring, UserId, UserProfile, VideochatId,
    VideochatRequest,
};
use crate::engine::events::RoomEvent;
use crate::history::{CallEntry, CallPage};
use crate::machine::Command;

mod checkpoint;
mod commit;
mod webhooks;

use checkpoint::Checkpointer;
use commit::{Committer, Waiting};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// `$1` a JSON array of user ids, `$2` now: the rings ringing for them, oldest first.
const RINGS_OF: &str = "SELECT id, kind, initiator_id, target_id, videochat_id, engine, status, \
     created_at_ms, expires_at_ms FROM videochat_requests \
     WHERE target_id IN (SELECT value FROM json_each($1)) \
     AND status = 'pending' AND expires_at_ms > $2 ORDER BY created_at_ms, id";

/// `$1` now, `$2` how many: rings whose time ran out, in the order they ran out.
const DUE_REQUESTS: &str = "SELECT id, kind, initiator_id, target_id, videochat_id, engine, status, \
     created_at_ms, expires_at_ms FROM videochat_requests \
     WHERE status = 'pending' AND expires_at_ms <= $1 ORDER BY expires_at_ms, id LIMIT $2";

/// When the next ring runs out.
const NEXT_EXPIRY: &str =
    "SELECT MIN(expires_at_ms) FROM videochat_requests WHERE status = 'pending'";

/// Reader connections (WAL readers do not block the writer, nor each other).
const READERS: u32 = 4;

pub struct SqliteStore {
    readers: SqlitePool,
    /// sqlx's writer connection, for the writes that are not handshakes. Its lock is the write
    /// lock: the committer holds it for each batch.
    writer: Arc<Mutex<SqliteConnection>>,
    committer: Committer,
    /// Runs the WAL checkpoints off the committer's thread; stopped when the store is dropped.
    _checkpointer: Checkpointer,
    signal: watch::Sender<u64>,
}

impl SqliteStore {
    /// Opens (creating if needed, with its parent directory) the database file of `url`.
    pub async fn connect(url: &str, origin: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit is on disk before it is answered.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // Checkpoints run on the checkpointer's thread (`sqlite/checkpoint.rs`).
            .pragma(
                "wal_autocheckpoint",
                checkpoint::WRITER_AUTOCHECKPOINT_PAGES.to_string(),
            );
        // The committer opens the same file with a connection of its own.
        // (sqlx names `:memory:` so; `mode=memory` keeps the name given.)
        let in_memory = options
            .get_filename()
            .to_string_lossy()
            .starts_with("file:sqlx-in-memory-")
            || url.contains("mode=memory");
        if in_memory {
            return Err(StoreError::Url(format!(
                "{url}: an in-memory SQLite database cannot be shared by the store's \
                 connections; name a file (sqlite://path/to/videochat.db)"
            )));
        }
        let path = options.get_filename().to_owned();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Url(format!("cannot create {}: {e}", parent.display())))?;
        }
        let mut connection = options.connect().await?;
        MIGRATOR.run(&mut connection).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await?;
        let writer = Arc::new(Mutex::new(connection));
        let committer = Committer::start(&path, writer.clone(), origin.to_owned())?;
        let checkpointer = Checkpointer::start(&path, Checkpointer::EVERY)?;
        let (signal, _) = super::signal();
        Ok(Self {
            readers,
            writer,
            committer,
            _checkpointer: checkpointer,
            signal,
        })
    }
}

/// Records an operation's answer under its idempotency key (`?1` user, `?2` key).
const INSERT_RECORD: &str = "INSERT INTO idempotency_records (user_id, key, operation, reply, \
     error_code, error_message, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Fails with a unique violation ([`StoreError::Conflict`]) if the key already has a record.
async fn insert_record(
    connection: &mut SqliteConnection,
    record: &IdempotencyRecord,
) -> StoreResult<()> {
    let (reply, code, message) = record.outcome.columns();
    sqlx::query(INSERT_RECORD)
        .bind(record.user_id.as_str())
        .bind(record.key.as_str())
        .bind(&record.operation)
        .bind(reply)
        .bind(code)
        .bind(message)
        .bind(record.created_at_ms)
        .execute(connection)
        .await?;
    Ok(())
}

type EventRow = (String, i64, Vec<u8>, String, i64);

impl SqliteStore {
    /// The rings ringing now for the users of `users` (a JSON array of ids), as each target is
    /// shown them: (target, ring).
    async fn rings_of(&self, users: &str, now_ms: i64) -> StoreResult<Vec<(UserId, Ring)>> {
        let rows: Vec<RequestRow> = sqlx::query_as(RINGS_OF)
            .bind(users)
            .bind(now_ms)
            .fetch_all(&self.readers)
            .await?;
        let mut shown = Vec::with_capacity(rows.len());
        for ring in requests_from_rows(rows)? {
            let initiator: Option<UserRow> = sqlx::query_as(
                "SELECT id, first_name, last_name, privacy_mode, avatar, avatar_3d, company_name, company_title \
                 FROM users WHERE id = $1",
            )
            .bind(ring.initiator.as_str())
            .fetch_optional(&self.readers)
            .await?;
            let initiator = match initiator {
                Some(row) => user_from_row(row)?,
                None => UserProfile::bare(ring.initiator.clone()),
            };
            let (participants, counter) = match &ring.videochat_id {
                Some(videochat) => {
                    super::participants_of(&self.readers, videochat.as_str()).await?
                }
                None => (Vec::new(), 0),
            };
            let target = ring.target.clone();
            shown.push((
                target,
                crate::machine::ring_shown(&ring, initiator, participants, counter),
            ));
        }
        Ok(shown)
    }
}

fn event_from_row(
    (recipient, seq, payload, traceparent, created_at_ms): EventRow,
) -> StoreResult<StoredEvent> {
    Ok(StoredEvent {
        recipient: UserId::parse(recipient).map_err(|e| StoreError::Corrupt {
            table: "outbox_events",
            detail: e.to_string(),
        })?,
        seq: u64::try_from(seq).unwrap_or_default(),
        payload,
        traceparent,
        created_at_ms,
    })
}

#[async_trait]
impl Store for SqliteStore {
    #[tracing::instrument(name = "store.load", skip_all, fields(db.system = "sqlite", otel.kind = "client"))]
    async fn load(
        &self,
        actor: &UserId,
        key: &IdempotencyKey,
        command: &Command,
        now_ms: i64,
    ) -> StoreResult<Facts> {
        let (sql, params) = facts::query(actor, key, command, now_ms);
        let mut query = sqlx::query_as::<_, FactRow>(sql);
        for param in params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::Int(int) => query.bind(int),
            };
        }
        let rows = query.fetch_all(&self.readers).await?;
        facts::facts_from_rows(rows, Some((actor, key)))
    }

    async fn load_owner(&self, owner: &UserId) -> StoreResult<Facts> {
        let rows = sqlx::query_as::<_, FactRow>(facts::OWNER)
            .bind(owner.as_str())
            .fetch_all(&self.readers)
            .await?;
        facts::facts_from_rows(rows, None)
    }

    #[tracing::instrument(name = "store.apply", skip_all, fields(db.system = "sqlite", otel.kind = "client"))]
    async fn apply(&self, write: &Write<'_>) -> StoreResult<Applied> {
        let (done, result) = oneshot::channel();
        self.committer.submit(Waiting {
            write: write.to_owned_write(),
            done,
        });
        // The committer answers every write it takes; a dropped answer means it stopped with
        // the write undone, which a retry settles.
        let positions = result.await.map_err(|_| StoreError::Conflict)??;
        // A row per delivery (an insert is cheap here): no group.
        Ok(Applied {
            positions,
            group: None,
        })
    }

    async fn record_refusal(&self, record: &IdempotencyRecord) -> StoreResult<bool> {
        let mut connection = self.writer.lock().await;
        match insert_record(&mut connection, record).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(error) => Err(error),
        }
    }

    #[tracing::instrument(name = "store.register_sockets", skip_all, fields(db.system = "sqlite", otel.kind = "client", sockets = opened.len()))]
    async fn register_sockets(
        &self,
        gateway: &GatewayId,
        opened: &[OpenedSocket],
        max_per_user: u32,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Vec<Registration>> {
        // The whole batch as one JSON array, so the statements below are a constant number per
        // batch however many sockets it holds.
        let as_json = |sockets: &mut dyn Iterator<Item = &OpenedSocket>| {
            serde_json::Value::Array(
                sockets
                    .map(|s| {
                        let p = &s.profile;
                        serde_json::json!({
                            "connection": s.connection.as_str(),
                            "user": s.user.as_str(),
                            "first_name": p.first_name,
                            "last_name": p.last_name,
                            "privacy_mode": p.privacy_mode,
                            "avatar": p.avatar,
                            "company_name": p.company_name,
                            "company_title": p.company_title,
                        })
                    })
                    .collect(),
            )
            .to_string()
        };
        let batch = as_json(&mut opened.iter());
        let accepted: Vec<&OpenedSocket>;
        {
            let mut connection = self.writer.lock().await;
            let mut tx = Connection::begin(&mut *connection).await?;
            sqlx::query(
                "INSERT INTO gateways (id, lease_expires_at_ms) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET lease_expires_at_ms = MAX(lease_expires_at_ms, excluded.lease_expires_at_ms)",
            )
            .bind(gateway.as_str())
            .bind(lease_until_ms)
            .execute(&mut *tx)
            .await?;
            // A socket is recorded only while its user stays within `max_per_user` live sockets,
            // counting this batch's earlier sockets of the same user (`k`).
            let recorded: Vec<(String,)> = sqlx::query_as(
                "INSERT INTO connections (id, user_id, gateway_id, connected_at_ms) \
                 SELECT n.id, n.user_id, $2, $3 FROM \
                   (SELECT value ->> 'connection' AS id, value ->> 'user' AS user_id, \
                           row_number() OVER (PARTITION BY value ->> 'user' ORDER BY key) AS k \
                    FROM json_each($1)) AS n \
                 WHERE n.k + (SELECT COUNT(*) FROM connections x JOIN gateways g ON g.id = x.gateway_id \
                              WHERE x.user_id = n.user_id AND x.id <> n.id AND g.lease_expires_at_ms > $3) <= $4 \
                 ON CONFLICT (id) DO UPDATE SET gateway_id = excluded.gateway_id \
                 RETURNING id",
            )
            .bind(&batch)
            .bind(gateway.as_str())
            .bind(now_ms)
            .bind(i64::from(max_per_user))
            .fetch_all(&mut *tx)
            .await?;
            accepted = opened
                .iter()
                .filter(|s| recorded.iter().any(|(id,)| id == s.connection.as_str()))
                .collect();
            let sockets = as_json(&mut accepted.iter().copied());
            // Just-in-time profiles: new users are created; known ones change where a claim
            // says something (a claim left out leaves the stored value).
            sqlx::query(
                "INSERT INTO users (id, first_name, last_name, privacy_mode, avatar, avatar_3d, company_name, company_title, updated_at_ms) \
                 SELECT value ->> 'user', COALESCE(value ->> 'first_name', ''), COALESCE(value ->> 'last_name', ''), \
                        COALESCE(value ->> 'privacy_mode', 0), COALESCE(value ->> 'avatar', ''), NULL, \
                        COALESCE(value ->> 'company_name', ''), COALESCE(value ->> 'company_title', ''), $2 \
                 FROM json_each($1) WHERE true ON CONFLICT (id) DO NOTHING",
            )
            .bind(&sockets)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE users SET first_name = COALESCE(p.first_name, users.first_name), \
                 last_name = COALESCE(p.last_name, users.last_name), privacy_mode = COALESCE(p.privacy_mode, users.privacy_mode), \
                 avatar = COALESCE(p.avatar, users.avatar), company_name = COALESCE(p.company_name, users.company_name), \
                 company_title = COALESCE(p.company_title, users.company_title), updated_at_ms = $2 \
                 FROM (SELECT value ->> 'user' AS id, value ->> 'first_name' AS first_name, value ->> 'last_name' AS last_name, \
                              value ->> 'privacy_mode' AS privacy_mode, value ->> 'avatar' AS avatar, \
                              value ->> 'company_name' AS company_name, value ->> 'company_title' AS company_title \
                       FROM json_each($1)) AS p \
                 WHERE users.id = p.id AND (p.first_name IS NOT NULL OR p.last_name IS NOT NULL OR p.privacy_mode IS NOT NULL \
                       OR p.avatar IS NOT NULL OR p.company_name IS NOT NULL OR p.company_title IS NOT NULL)",
            )
            .bind(&sockets)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        // After the commit, positions before rings (see the Postgres store for why).
        let users = serde_json::Value::Array(
            accepted
                .iter()
                .map(|s| serde_json::Value::from(s.user.as_str()))
                .collect(),
        )
        .to_string();
        let last_seqs: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT m.user_id, m.last_seq, COALESCE(s.seen_seq, 0) FROM mailboxes m \
             LEFT JOIN mailbox_seen s ON s.user_id = m.user_id \
             WHERE m.user_id IN (SELECT value FROM json_each($1))",
        )
        .bind(&users)
        .fetch_all(&self.readers)
        .await?;
        let rings = self.rings_of(&users, now_ms).await?;
        Ok(super::registrations(opened, &accepted, &last_seqs, &rings))
    }

    async fn close_sockets(&self, connections: &[ConnectionId]) -> StoreResult<()> {
        let ids = serde_json::Value::Array(
            connections
                .iter()
                .map(|c| serde_json::Value::from(c.as_str()))
                .collect(),
        )
        .to_string();
        let mut connection = self.writer.lock().await;
        sqlx::query("DELETE FROM connections WHERE id IN (SELECT value FROM json_each($1))")
            .bind(ids)
            .execute(&mut *connection)
            .await?;
        Ok(())
    }

    async fn attach_gateway(
        &self,
        gateway: &GatewayId,
        sockets: &[(ConnectionId, UserId)],
        lease_until_ms: i64,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut connection = self.writer.lock().await;
        let mut tx = Connection::begin(&mut *connection).await?;
        sqlx::query(
            "INSERT INTO gateways (id, lease_expires_at_ms) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET lease_expires_at_ms = excluded.lease_expires_at_ms",
        )
        .bind(gateway.as_str())
        .bind(lease_until_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM connections WHERE gateway_id = $1")
            .bind(gateway.as_str())
            .execute(&mut *tx)
            .await?;
        for (id, user) in sockets {
            sqlx::query(
                "INSERT INTO connections (id, user_id, gateway_id, connected_at_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET gateway_id = excluded.gateway_id",
            )
            .bind(id.as_str())
            .bind(user.as_str())
            .bind(gateway.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn renew_gateway_lease(&self, gateway: &GatewayId, until_ms: i64) -> StoreResult<bool> {
        let mut connection = self.writer.lock().await;
        let renewed = sqlx::query("UPDATE gateways SET lease_expires_at_ms = $2 WHERE id = $1")
            .bind(gateway.as_str())
            .bind(until_ms)
            .execute(&mut *connection)
            .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn sweep_dead_gateways(&self, before_ms: i64) -> StoreResult<u64> {
        let mut connection = self.writer.lock().await;
        let mut tx = Connection::begin(&mut *connection).await?;
        let connections = sqlx::query(
            "DELETE FROM connections WHERE gateway_id IN (SELECT id FROM gateways WHERE lease_expires_at_ms < $1)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM gateways WHERE lease_expires_at_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(connections.rows_affected())
    }

    async fn events_in(&self, ranges: &[EventRange]) -> StoreResult<Vec<StoredEvent>> {
        let position = |p: u64| i64::try_from(p).unwrap_or(i64::MAX);
        let mut events = Vec::new();
        for range in ranges {
            let rows: Vec<EventRow> = sqlx::query_as(
                "SELECT recipient_user_id, seq, payload, traceparent, created_at_ms FROM outbox_events \
                 WHERE recipient_user_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
            )
            .bind(range.user.as_str())
            .bind(position(range.after))
            .bind(position(range.through))
            .fetch_all(&self.readers)
            .await?;
            for row in rows {
                events.push(event_from_row(row)?);
            }
        }
        Ok(events)
    }

    async fn mark_seen(&self, seen: &[(UserId, u64)]) -> StoreResult<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let pairs = serde_json::Value::Array(
            seen.iter()
                .map(|(user, seq)| serde_json::json!([user.as_str(), seq]))
                .collect(),
        )
        .to_string();
        let mut connection = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO mailbox_seen (user_id, seen_seq) \
             SELECT value ->> 0, MAX(value ->> 1) FROM json_each($1) GROUP BY value ->> 0 \
             ON CONFLICT (user_id) DO UPDATE SET seen_seq = MAX(mailbox_seen.seen_seq, excluded.seen_seq)",
        )
        .bind(pairs)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    async fn snapshot(&self, user: &UserId, now_ms: i64) -> StoreResult<Snapshot> {
        let incoming = self.rings_for(user, now_ms).await?;
        snapshot_from(&self.readers, user, now_ms, incoming).await
    }

    async fn follow(&self, cursor: Option<u64>) -> StoreResult<Followed> {
        // One process, one replica: every event was pushed by the replica that wrote it.
        Ok(Followed {
            cursor: cursor.unwrap_or_default(),
            events: Vec::new(),
        })
    }

    async fn due_requests(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<VideochatRequest>> {
        let rows: Vec<RequestRow> = sqlx::query_as(DUE_REQUESTS)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(&self.readers)
            .await?;
        requests_from_rows(rows)
    }

    async fn next_expiry(&self) -> StoreResult<Option<i64>> {
        let (next,): (Option<i64>,) = sqlx::query_as(NEXT_EXPIRY).fetch_one(&self.readers).await?;
        Ok(next)
    }

    async fn rings_for(&self, user: &UserId, now_ms: i64) -> StoreResult<Vec<Ring>> {
        let users = serde_json::Value::Array(vec![user.as_str().into()]).to_string();
        Ok(self
            .rings_of(&users, now_ms)
            .await?
            .into_iter()
            .map(|(_, ring)| ring)
            .collect())
    }

    async fn upsert_user(&self, user: &UserProfile, now_ms: i64) -> StoreResult<()> {
        let mut connection = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO users (id, first_name, last_name, privacy_mode, avatar, avatar_3d, company_name, company_title, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET first_name = excluded.first_name, last_name = excluded.last_name, \
             privacy_mode = excluded.privacy_mode, avatar = excluded.avatar, avatar_3d = excluded.avatar_3d, \
             company_name = excluded.company_name, company_title = excluded.company_title, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(user.id.as_str())
        .bind(&user.first_name)
        .bind(&user.last_name)
        .bind(i64::from(user.privacy_mode))
        .bind(&user.avatar)
        .bind(avatar_3d_json(user)?)
        .bind(&user.company_name)
        .bind(&user.company_title)
        .bind(now_ms)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    async fn user(&self, id: &UserId, now_ms: i64) -> StoreResult<Option<(UserProfile, bool)>> {
        let row: Option<(String, String, String, i64, String, Option<String>, String, String, i64)> =
            sqlx::query_as(
                "SELECT id, first_name, last_name, privacy_mode, avatar, avatar_3d, company_name, company_title, \
                 EXISTS (SELECT 1 FROM connections c JOIN gateways g ON g.id = c.gateway_id \
                         WHERE c.user_id = $1 AND g.lease_expires_at_ms > $2) \
                 FROM users WHERE id = $1",
            )
            .bind(id.as_str())
            .bind(now_ms)
            .fetch_optional(&self.readers)
            .await?;
        row.map(
            |(id, first, last, privacy, avatar, avatar_3d, company, title, available)| {
                Ok((
                    user_from_row((id, first, last, privacy, avatar, avatar_3d, company, title))?,
                    available != 0,
                ))
            },
        )
        .transpose()
    }

    async fn prune(
        &self,
        events_before_ms: i64,
        idempotency_before_ms: i64,
        history_before_ms: i64,
    ) -> StoreResult<u64> {
        let mut connection = self.writer.lock().await;
        let events = sqlx::query("DELETE FROM outbox_events WHERE created_at_ms < $1")
            .bind(events_before_ms)
            .execute(&mut *connection)
            .await?;
        let records = sqlx::query("DELETE FROM idempotency_records WHERE created_at_ms < $1")
            .bind(idempotency_before_ms)
            .execute(&mut *connection)
            .await?;
        let rings = sqlx::query(calls::PRUNE_HISTORY)
            .bind(history_before_ms)
            .execute(&mut *connection)
            .await?;
        Ok(events.rows_affected() + records.rows_affected() + rings.rows_affected())
    }

    async fn apply_room_event(&self, event: &RoomEvent) -> StoreResult<RoomApplied> {
        let mut connection = self.writer.lock().await;
        let mut tx = Connection::begin(&mut *connection).await?;
        let applied = calls::apply_room_event::<sqlx::Sqlite>(&mut tx, event).await?;
        tx.commit().await?;
        Ok(applied)
    }

    async fn pending_invites(&self, videochat: &VideochatId) -> StoreResult<Vec<VideochatRequest>> {
        let rows: Vec<RequestRow> = sqlx::query_as(calls::PENDING_INVITES)
            .bind(videochat.as_str())
            .fetch_all(&self.readers)
            .await?;
        requests_from_rows(rows)
    }

    async fn list_calls(
        &self,
        user: &UserId,
        before: Option<i64>,
        limit: u32,
        acknowledge: bool,
        now_ms: i64,
    ) -> StoreResult<CallPage> {
        let page = calls::read_page(&self.readers, user, before, limit, now_ms).await?;
        if acknowledge {
            let mut connection = self.writer.lock().await;
            sqlx::query(calls::ACKNOWLEDGE)
                .bind(user.as_str())
                .bind(now_ms)
                .execute(&mut *connection)
                .await?;
        }
        Ok(page)
    }

    async fn missed_calls(
        &self,
        users: &[UserId],
        now_ms: i64,
    ) -> StoreResult<Vec<(UserId, u32, Vec<CallEntry>)>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let ids =
            serde_json::Value::Array(users.iter().map(|u| u.as_str().into()).collect()).to_string();
        let counts: Vec<(String, i64)> = sqlx::query_as(calls::MISSED_COUNTS_SQLITE)
            .bind(ids)
            .fetch_all(&self.readers)
            .await?;
        // One read per user who missed calls: rare when a socket connects.
        let mut out = Vec::new();
        for (user, count) in super::missed_counts(counts)? {
            let latest = calls::read_latest_missed(&self.readers, &user, now_ms).await?;
            out.push((user, count, latest));
        }
        Ok(out)
    }

    fn outbox_signal(&self) -> watch::Receiver<u64> {
        self.signal.subscribe()
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RequestId;

    /// The history indexes name the user like the small pending-ring indexes do; a read of the
    /// rings still ringing that picks one walks the user's whole history (migration 0007).
    const HISTORY_INDEXES: [&str; 2] = ["requests_by_initiator_time", "requests_by_target_time"];

    async fn migrated() -> SqliteConnection {
        let mut connection = SqliteConnectOptions::from_str("sqlite::memory:")
            .unwrap()
            .connect()
            .await
            .unwrap();
        MIGRATOR.run(&mut connection).await.unwrap();
        connection
    }

    /// SQLite's plan for `sql` with `params`, one line per step.
    async fn plan(connection: &mut SqliteConnection, sql: &str, params: Vec<Param>) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        // Only this test's own constants go into the text.
        let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(explain));
        for param in params {
            query = match param {
                Param::Text(text) => query.bind(text),
                Param::Int(int) => query.bind(int),
            };
        }
        let steps = query.fetch_all(&mut *connection).await.unwrap();
        steps
            .into_iter()
            .map(|(_, _, _, step)| step)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn text(s: &str) -> Param {
        Param::Text(s.to_owned())
    }

    #[tokio::test]
    async fn reads_of_rings_still_ringing_never_walk_a_users_history() {
        let mut connection = migrated().await;
        let actor = UserId::parse("alice").unwrap();
        let key = IdempotencyKey::parse("k1").unwrap();
        let target = UserId::parse("bob").unwrap();
        let request = RequestId::parse("vcr_1").unwrap();
        let videochat = VideochatId::parse("vc_1").unwrap();
        let commands = Command::one_of_each(target, videochat, request);
        let mut reads = Vec::new();
        for command in &commands {
            let (sql, params) = facts::query(&actor, &key, command, 1_000);
            reads.push((command.name(), sql, params));
        }
        reads.push((
            "rings of",
            RINGS_OF,
            vec![text(r#"["bob"]"#), Param::Int(1_000)],
        ));
        reads.push((
            "outgoing rings",
            super::super::OUTGOING_RINGS,
            vec![text("alice"), Param::Int(1_000)],
        ));
        reads.push((
            "due rings",
            DUE_REQUESTS,
            vec![Param::Int(1_000), Param::Int(100)],
        ));
        reads.push(("next expiry", NEXT_EXPIRY, Vec::new()));
        reads.push((
            "pending invites",
            calls::PENDING_INVITES,
            vec![text("vc_1")],
        ));
        for (name, sql, params) in reads {
            let plan = plan(&mut connection, sql, params).await;
            for index in HISTORY_INDEXES {
                assert!(
                    !plan.contains(index),
                    "{name} reads the history index {index}:\n{plan}"
                );
            }
            assert!(
                !plan.contains("SCAN videochat_requests") && !plan.contains("SCAN r "),
                "{name} scans every ring:\n{plan}"
            );
        }
    }

    #[tokio::test]
    async fn an_in_memory_database_is_refused_with_a_clear_error() {
        for url in ["sqlite::memory:", "sqlite://videochat.db?mode=memory"] {
            match SqliteStore::connect(url, "test").await {
                Err(StoreError::Url(message)) => {
                    assert!(message.contains("in-memory"), "{url}: {message}")
                }
                Err(other) => panic!("{url} refused for another reason: {other}"),
                Ok(_) => panic!("{url}: an in-memory database was accepted"),
            }
        }
    }

    #[tokio::test]
    async fn the_history_listing_reads_each_direction_from_its_index() {
        let mut connection = migrated().await;
        let plan = plan(
            &mut connection,
            calls::LIST_CALLS,
            vec![text("alice"), Param::Int(1_000), Param::Int(20)],
        )
        .await;
        for index in HISTORY_INDEXES {
            assert!(plan.contains(index), "the listing misses {index}:\n{plan}");
        }
    }
}
