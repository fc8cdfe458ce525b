//! Postgres: the production store. Any number of service replicas share one database.
//!
//! Loads and writes of concurrent operations run together ([`batch`]): the facts of every
//! operation of one kind waiting at that moment in one statement ([`load`]), their writes in
//! another ([`apply`]) — data-modifying CTEs that move each ring out of pending (the guard),
//! insert what the decisions created, bump each recipient's mailbox (its row lock orders that
//! user's events), append the events and record the idempotency answers, one round trip and one
//! commit, no explicit transaction. A lone operation runs alone at once.
//!
//! Replicas hear of each other's events without a NOTIFY inside any write ([`announce`]): after
//! local commits with events, one background task sends at most one `NOTIFY` every few
//! milliseconds, and only while another replica is listening; the others' followers then read
//! the outbox ([`Store::follow`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use std::str::FromStr;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

mod announce;
mod apply;
mod batch;
#[cfg(test)]
mod group_tests;
mod hot;
mod load;
#[cfg(test)]
mod tests;
mod warm;
mod webhooks;

use self::apply::ApplyJob;
use self::batch::Batcher;
use self::load::LoadJob;
use super::calls::{self, RoomApplied};
use super::facts::{self, FactRow};
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

/// Most events one follower read returns.
const FOLLOW_BATCH: i64 = 5_000;
/// Users per replay query when a gateway reattaches.
const REPLAY_CHUNK: usize = 1_000;

/// Deletes the outbox's events older than `$1` (Unix ms) by walking the transaction-id index
/// from its oldest end: the boundary is the first event, in transaction order, that is not that
/// old, so the statement reads the rows it deletes and one more, however large the outbox.
/// (Transaction order and time order agree to within a commit's duration; an event a few
/// milliseconds past the boundary either way is kept or pruned a sweep early or late.)
///
/// Why not `WHERE created_at_ms < $1` on a time index: a BRIN index over the outbox, as it was,
/// returns every page range it has not summarized yet, and ranges are summarized only by vacuum,
/// so that statement read the whole recent outbox every sweep — at 500 handshakes/s a 30 ms
/// burst of one core every 5 s after the first minute, growing with the outbox — and a B-tree
/// would cost every event one more index entry.
pub(super) const PRUNE_OUTBOX: &str = "DELETE FROM outbox_events WHERE xid < COALESCE(\
     (SELECT xid FROM outbox_events WHERE created_at_ms >= $1 ORDER BY xid LIMIT 1), \
     (SELECT MAX(xid) + 1 FROM outbox_events))";

/// Moves users' delivered positions forward: `$1` users, `$2` positions (a user may repeat).
const MARK_SEEN: &str = "INSERT INTO mailbox_seen (user_id, seen_seq) \
     SELECT user_id, MAX(seq) FROM UNNEST($1::text[], $2::bigint[]) AS s(user_id, seq) \
     GROUP BY user_id ORDER BY user_id \
     ON CONFLICT (user_id) DO UPDATE SET seen_seq = GREATEST(mailbox_seen.seen_seq, excluded.seen_seq)";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Statements in flight at once per kind of batch (loads, writes). One: operations that arrive
/// while a statement runs make up the next batch, and batches grow with the load. Measured at
/// 50 pairs flat out: 1 → ~2,000 handshakes/s, 2 → ~1,640, 4 → ~1,450 (more executors run
/// smaller batches, and each statement has the same fixed cost). Measured again after the
/// in-process gateway and the array lookups (2026-12, `docs/benchmarks.md`): a second write
/// executor took Postgres's CPU per handshake from ~410 to ~530 µs and handshakes/s down 10 %,
/// a second load executor down 7 %.
const EXECUTORS: usize = 1;
/// Connections each pool keeps open (and readied) however quiet the replica: what it uses at
/// once at 500 handshakes/s (the hot path's: one write and a batch's kinds of loads; the other
/// pool's: the gateways' reports, followers, sweeps). Measured before the pools were split, one
/// pool for all: with 4, the pool still opened one mid-run now and then, and the batch that
/// asked for it waited for its opening and readying (rings of 25–33 ms); with 8 none was opened
/// in a 10 s paced run. Each pool opens more, up to its share, as needed.
const KEPT_OPEN: u32 = 8;
/// Most operations in one statement.
const MAX_BATCH: usize = 64;

pub struct PostgresStore {
    pool: PgPool,
    origin: String,
    signal: Arc<watch::Sender<u64>>,
    loads: Batcher<LoadJob, Facts>,
    applies: Batcher<ApplyJob, Applied>,
    /// Stops the LISTEN, NOTIFY and batch tasks when the store is dropped.
    _tasks: DropGuard,
}

/// Until when (Unix ms) pooled connections are checked before use. Normally they are not (a
/// round trip per statement); once a statement finds the database gone, every connection the
/// pool holds may be dead, and without a check each would fail one operation after the database
/// is back. For a few seconds after such an error, a connection that fails a ping is dropped
/// and another one (or a new one) taken instead.
static SUSPECT_UNTIL_MS: AtomicI64 = AtomicI64::new(0);
/// How long connections stay suspect after a connection error.
const SUSPECT_FOR_MS: i64 = 5_000;

/// Marks the pools' connections as suspect (see [`SUSPECT_UNTIL_MS`]).
pub(crate) fn suspect_connections() {
    SUSPECT_UNTIL_MS.fetch_max(crate::service::now_ms() + SUSPECT_FOR_MS, Ordering::Relaxed);
}

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32, origin: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(e.to_string()))?
            // Every statement here reaches rows by key. Plan each once per connection instead of
            // at every execution (by default statements with parameters are re-planned at every
            // bind, which cost more than executing them) — and since that one plan is made
            // early, often against nearly empty tables where a sequential scan looks cheapest,
            // rule out scans and hash/merge joins so that it stays a few index lookups however
            // large the tables grow. (Measured: cached plans with sequential scans and hash
            // joins took 40% of Postgres's time within seconds of a load test.)
            //
            // And no JIT: with scans ruled out, a statement over a table that only a scan can
            // read (the few rows of `gateways`) is costed at 10^10, far past `jit_above_cost`,
            // so Postgres compiled it with LLVM at every execution — 60–150 ms of a core each
            // time, measured in the presence sweep, every 5 s, stalling handshakes behind it.
            // Nothing here runs long enough for compiled expressions to pay back.
            .options([
                ("plan_cache_mode", "force_generic_plan"),
                ("enable_seqscan", "off"),
                ("enable_hashjoin", "off"),
                ("enable_mergejoin", "off"),
                ("jit", "off"),
            ]);
        // Migrations first, on a connection of their own: the pool's connections are readied
        // for the hot path as they open (`warm.rs`), which needs the tables.
        let mut migrating = PgConnection::connect_with(&options).await?;
        MIGRATOR.run(&mut migrating).await?;
        migrating.close().await?;
        let (hot_connections, other_connections) = split_connections(max_connections);
        let pool = pool_options(other_connections, origin)
            .connect_with(options.clone())
            .await?;
        open_all(&pool, other_connections.min(KEPT_OPEN)).await?;
        let (sender, _) = super::signal();
        let signal = Arc::new(sender);
        let stop = CancellationToken::new();
        // Held from here on: if the store is not made after all (the hot path cannot start),
        // dropping it stops the listener and announcer already started.
        let tasks = stop.clone().drop_guard();
        let announce = announce::start(
            &pool,
            origin,
            signal.clone(),
            announce::Timing::default(),
            stop.clone(),
        )
        .await?;
        let hot = hot::start(options, hot_connections, origin, announce, stop.clone()).await?;
        Ok(Self {
            pool,
            origin: origin.to_owned(),
            signal,
            loads: hot.loads,
            applies: hot.applies,
            _tasks: tasks,
        })
    }
}

/// `VIDEOCHAT_DB_MAX_CONNECTIONS` shared between the hot path's pool ([`hot`]: the loads and
/// writes of handshakes) and the pool for everything else (the outbox LISTEN session, which
/// holds one of its connections for good, followers, replays, the gateways' reports, sweeps,
/// webhooks): half each, at least one for the hot path and two for the rest.
fn split_connections(max_connections: u32) -> (u32, u32) {
    let hot = (max_connections / 2).max(1);
    (hot, max_connections.saturating_sub(hot).max(2))
}

/// How every pool of this store connects: readied connections, a short acquire timeout, and
/// pings only while connections are suspect (see [`SUSPECT_UNTIL_MS`]).
fn pool_options(max_connections: u32, origin: &str) -> PgPoolOptions {
    let warm_origin: Arc<str> = Arc::from(origin);
    PgPoolOptions::new()
        .max_connections(max_connections)
        // As many as the pool's users need at once (`KEPT_OPEN`), opened (and readied) before
        // the replica reports ready and again in the background when one is lost, so that
        // handshakes seldom wait for one to open. Not all of them: the pool hands out its idle
        // connections in turn, and each connection in the rotation still pays a little of
        // its own on first touching the data (~1 ms per connection, measured).
        .min_connections(max_connections.min(KEPT_OPEN))
        .after_connect(move |connection, _| {
            let origin = warm_origin.clone();
            Box::pin(async move {
                // Only an optimization: a connection that could not be readied still serves.
                if let Err(error) = warm::warm(connection, &origin).await {
                    tracing::warn!(%error, "could not ready a new Postgres connection");
                }
                Ok(())
            })
        })
        // Short: while the database is down, the pool retries connecting with a backoff of
        // up to a fifth of this, which is how late the first statement after its return can
        // be. A caller whose acquire times out retries (StoreError::Unavailable).
        .acquire_timeout(Duration::from_secs(2))
        // No ping before every statement (a round trip each): a broken connection fails
        // its statement, which the caller retries or answers with 1004.
        .test_before_acquire(false)
        .before_acquire(|connection, _| {
            Box::pin(async move {
                if crate::service::now_ms() >= SUSPECT_UNTIL_MS.load(Ordering::Relaxed) {
                    return Ok(true);
                }
                Ok(connection.ping().await.is_ok())
            })
        })
}

/// Opens (and readies) `count` connections at once, then returns them to the pool.
async fn open_all(pool: &PgPool, count: u32) -> StoreResult<()> {
    let opened = futures_util::future::join_all((0..count).map(|_| pool.acquire())).await;
    for connection in opened {
        connection?;
    }
    Ok(())
}

const EVENT_COLUMNS: &str = "recipient_user_id, seq, payload, traceparent, created_at_ms";
type EventRow = (String, i64, Vec<u8>, String, i64);

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
impl Store for PostgresStore {
    #[tracing::instrument(name = "store.load", skip_all, fields(db.system = "postgresql", otel.kind = "client"))]
    async fn load(
        &self,
        actor: &UserId,
        key: &IdempotencyKey,
        command: &Command,
        now_ms: i64,
    ) -> StoreResult<Facts> {
        self.loads
            .submit(LoadJob {
                actor: actor.clone(),
                key: key.clone(),
                command: command.clone(),
                now_ms,
            })
            .await
    }

    async fn load_owner(&self, owner: &UserId) -> StoreResult<Facts> {
        let rows = sqlx::query_as::<_, FactRow>(facts::OWNER)
            .bind(owner.as_str())
            .fetch_all(&self.pool)
            .await?;
        facts::facts_from_rows(rows, None)
    }

    #[tracing::instrument(name = "store.apply", skip_all, fields(db.system = "postgresql", otel.kind = "client"))]
    async fn apply(&self, write: &Write<'_>) -> StoreResult<Applied> {
        self.applies.submit(write.to_owned_write()).await
    }

    async fn record_refusal(&self, record: &IdempotencyRecord) -> StoreResult<bool> {
        let (reply, code, message) = record.outcome.columns();
        let done = sqlx::query(
            "INSERT INTO idempotency_records (user_id, key, operation, reply, error_code, error_message, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, key) DO NOTHING",
        )
        .bind(record.user_id.as_str())
        .bind(record.key.as_str())
        .bind(&record.operation)
        .bind(reply)
        .bind(code)
        .bind(message)
        .bind(record.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(name = "store.register_sockets", skip_all, fields(db.system = "postgresql", otel.kind = "client", sockets = opened.len()))]
    async fn register_sockets(
        &self,
        gateway: &GatewayId,
        opened: &[OpenedSocket],
        max_per_user: u32,
        lease_until_ms: i64,
        now_ms: i64,
    ) -> StoreResult<Vec<Registration>> {
        let all_users: Vec<&str> = opened.iter().map(|s| s.user.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        // A registration can race a gateway's first heartbeat; the lease row must exist for
        // the socket to count as present.
        sqlx::query(
            "INSERT INTO gateways (id, lease_expires_at_ms) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET lease_expires_at_ms = GREATEST(gateways.lease_expires_at_ms, excluded.lease_expires_at_ms)",
        )
        .bind(gateway.as_str())
        .bind(lease_until_ms)
        .execute(&mut *tx)
        .await?;
        // A socket is recorded only while its user stays within `max_per_user` live sockets,
        // counting this batch's earlier sockets of the same user (`k`).
        let recorded: Vec<(String,)> = sqlx::query_as(
            "WITH n AS (SELECT c.id, c.user_id, row_number() OVER (PARTITION BY c.user_id ORDER BY c.ord) AS k \
                        FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS c(id, user_id, ord)) \
             INSERT INTO connections (id, user_id, gateway_id, connected_at_ms) \
             SELECT n.id, n.user_id, $3, $4 FROM n \
             WHERE n.k + (SELECT COUNT(*) FROM connections x JOIN gateways g ON g.id = x.gateway_id \
                          WHERE x.user_id = n.user_id AND x.id <> n.id AND g.lease_expires_at_ms > $4) <= $5 \
             ON CONFLICT (id) DO UPDATE SET gateway_id = excluded.gateway_id \
             RETURNING id",
        )
        .bind(
            opened
                .iter()
                .map(|s| s.connection.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(&all_users)
        .bind(gateway.as_str())
        .bind(now_ms)
        .bind(i64::from(max_per_user))
        .fetch_all(&mut *tx)
        .await?;
        let accepted: Vec<&OpenedSocket> = opened
            .iter()
            .filter(|s| recorded.iter().any(|(id,)| id == s.connection.as_str()))
            .collect();
        let users: Vec<&str> = accepted.iter().map(|s| s.user.as_str()).collect();
        // Just-in-time profiles: new users are created, known ones change only where a claim
        // says something new (no write at all when nothing changed).
        let patch = |f: fn(&OpenedSocket) -> Option<&str>| -> Vec<Option<&str>> {
            accepted.iter().map(|s| f(s)).collect()
        };
        sqlx::query(
            "WITH p AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[]) \
                 AS p(id, first_name, last_name, privacy_mode, avatar, company_name, company_title)), \
             created AS (INSERT INTO users (id, first_name, last_name, privacy_mode, avatar, avatar_3d, company_name, company_title, updated_at_ms) \
                 SELECT DISTINCT ON (id) id, COALESCE(first_name, ''), COALESCE(last_name, ''), COALESCE(privacy_mode, 0), COALESCE(avatar, ''), NULL, \
                        COALESCE(company_name, ''), COALESCE(company_title, ''), $8 FROM p \
                 ON CONFLICT (id) DO NOTHING RETURNING id) \
             UPDATE users u SET first_name = COALESCE(p.first_name, u.first_name), last_name = COALESCE(p.last_name, u.last_name), \
                 privacy_mode = COALESCE(p.privacy_mode, u.privacy_mode), avatar = COALESCE(p.avatar, u.avatar), \
                 company_name = COALESCE(p.company_name, u.company_name), company_title = COALESCE(p.company_title, u.company_title), \
                 updated_at_ms = $8 \
             FROM p WHERE u.id = p.id \
               AND (u.first_name, u.last_name, u.privacy_mode, u.avatar, u.company_name, u.company_title) IS DISTINCT FROM \
                   (COALESCE(p.first_name, u.first_name), COALESCE(p.last_name, u.last_name), COALESCE(p.privacy_mode, u.privacy_mode), \
                    COALESCE(p.avatar, u.avatar), COALESCE(p.company_name, u.company_name), COALESCE(p.company_title, u.company_title))",
        )
        .bind(&users)
        .bind(patch(|s| s.profile.first_name.as_deref()))
        .bind(patch(|s| s.profile.last_name.as_deref()))
        .bind(accepted.iter().map(|s| s.profile.privacy_mode.map(i64::from)).collect::<Vec<_>>())
        .bind(patch(|s| s.profile.avatar.as_deref()))
        .bind(patch(|s| s.profile.company_name.as_deref()))
        .bind(patch(|s| s.profile.company_title.as_deref()))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        // Read after the commit, positions first: an event committed after this read has a
        // later position and reaches the socket through the link; a ring committed before it
        // is in the rings read next.
        let last_seqs: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT m.user_id, m.last_seq, COALESCE(s.seen_seq, 0) FROM mailboxes m \
             LEFT JOIN mailbox_seen s ON s.user_id = m.user_id WHERE m.user_id = ANY($1)",
        )
        .bind(&users)
        .fetch_all(&self.pool)
        .await?;
        let rings = self.rings_of(&users, now_ms).await?;
        Ok(super::registrations(opened, &accepted, &last_seqs, &rings))
    }

    async fn close_sockets(&self, connections: &[ConnectionId]) -> StoreResult<()> {
        sqlx::query("DELETE FROM connections WHERE id = ANY($1)")
            .bind(connections.iter().map(|c| c.as_str()).collect::<Vec<_>>())
            .execute(&self.pool)
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
        let ids: Vec<&str> = sockets.iter().map(|(c, _)| c.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO gateways (id, lease_expires_at_ms) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET lease_expires_at_ms = excluded.lease_expires_at_ms",
        )
        .bind(gateway.as_str())
        .bind(lease_until_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM connections WHERE gateway_id = $1 AND NOT (id = ANY($2))")
            .bind(gateway.as_str())
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO connections (id, user_id, gateway_id, connected_at_ms) \
             SELECT c.id, c.user_id, $3, $4 FROM UNNEST($1::text[], $2::text[]) AS c(id, user_id) \
             ON CONFLICT (id) DO UPDATE SET gateway_id = excluded.gateway_id",
        )
        .bind(&ids)
        .bind(sockets.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>())
        .bind(gateway.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn renew_gateway_lease(&self, gateway: &GatewayId, until_ms: i64) -> StoreResult<bool> {
        let renewed = sqlx::query("UPDATE gateways SET lease_expires_at_ms = $2 WHERE id = $1")
            .bind(gateway.as_str())
            .bind(until_ms)
            .execute(&self.pool)
            .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn sweep_dead_gateways(&self, before_ms: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
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
        for chunk in ranges.chunks(REPLAY_CHUNK) {
            let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {EVENT_COLUMNS} FROM outbox_events o \
                 JOIN UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS c(user_id, after, through) \
                   ON o.recipient_user_id = c.user_id AND o.seq > c.after AND o.seq <= c.through \
                 ORDER BY o.recipient_user_id, o.seq"
            )))
            .bind(chunk.iter().map(|r| r.user.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| position(r.after)).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| position(r.through))
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&self.pool)
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
        // Sorted, so two gateways' reports lock rows in the same order (no deadlock).
        sqlx::query(MARK_SEEN)
            .bind(seen.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>())
            .bind(
                seen.iter()
                    .map(|(_, s)| i64::try_from(*s).unwrap_or(i64::MAX))
                    .collect::<Vec<_>>(),
            )
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn snapshot(&self, user: &UserId, now_ms: i64) -> StoreResult<Snapshot> {
        let incoming = self.rings_for(user, now_ms).await?;
        snapshot_from(&self.pool, user, now_ms, incoming).await
    }

    #[tracing::instrument(name = "store.follow", skip_all, level = "debug")]
    async fn follow(&self, cursor: Option<u64>) -> StoreResult<Followed> {
        // Every transaction below the horizon has finished: reading [cursor, horizon) reads
        // whole transactions, and a later read starting at the horizon misses none of them,
        // however late they committed.
        let (horizon,): (i64,) =
            sqlx::query_as("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                .fetch_one(&self.pool)
                .await?;
        let horizon = u64::try_from(horizon).unwrap_or_default();
        let Some(cursor) = cursor else {
            return Ok(Followed {
                cursor: horizon,
                events: Vec::new(),
            });
        };
        if cursor >= horizon {
            return Ok(Followed {
                cursor,
                events: Vec::new(),
            });
        }
        let read = |from: i64, to: i64, limit: i64| {
            sqlx::query_as::<_, (i64, String, i64, Vec<u8>, String, i64)>(
                "SELECT xid, recipient_user_id, seq, payload, traceparent, created_at_ms FROM outbox_events \
                 WHERE xid >= $1 AND xid < $2 AND origin <> $3 ORDER BY xid, recipient_user_id, seq LIMIT $4",
            )
            .bind(from)
            .bind(to)
            .bind(&self.origin)
            .bind(limit)
            .fetch_all(&self.pool)
        };
        let mut rows = read(
            i64::try_from(cursor).unwrap_or(i64::MAX),
            i64::try_from(horizon).unwrap_or(i64::MAX),
            FOLLOW_BATCH,
        )
        .await?;
        let mut next = horizon;
        if rows.len() as i64 == FOLLOW_BATCH
            && let Some(last_xid) = rows.last().map(|r| r.0)
        {
            if rows.first().map(|r| r.0) != Some(last_xid) {
                // The batch may end inside a transaction: read that one whole next time.
                rows.retain(|r| r.0 != last_xid);
                next = u64::try_from(last_xid).unwrap_or_default();
            } else {
                // One transaction with more events than a batch: read all of it now.
                rows = read(last_xid, last_xid + 1, i64::MAX).await?;
                next = u64::try_from(last_xid + 1).unwrap_or_default();
            }
        }
        let events = rows
            .into_iter()
            .map(|(_, recipient, seq, payload, traceparent, created_at_ms)| {
                event_from_row((recipient, seq, payload, traceparent, created_at_ms))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Followed {
            cursor: next,
            events,
        })
    }

    async fn due_requests(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<VideochatRequest>> {
        let rows: Vec<RequestRow> = sqlx::query_as(
            "SELECT id, kind, initiator_id, target_id, videochat_id, engine, status, created_at_ms, expires_at_ms \
             FROM videochat_requests WHERE status = 'pending' AND expires_at_ms <= $1 ORDER BY expires_at_ms, id LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        requests_from_rows(rows)
    }

    async fn next_expiry(&self) -> StoreResult<Option<i64>> {
        let (next,): (Option<i64>,) = sqlx::query_as(
            "SELECT MIN(expires_at_ms) FROM videochat_requests WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(next)
    }

    async fn rings_for(&self, user: &UserId, now_ms: i64) -> StoreResult<Vec<Ring>> {
        Ok(self
            .rings_of(&[user.as_str()], now_ms)
            .await?
            .into_iter()
            .map(|(_, ring)| ring)
            .collect())
    }

    async fn upsert_user(&self, user: &UserProfile, now_ms: i64) -> StoreResult<()> {
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn user(&self, id: &UserId, now_ms: i64) -> StoreResult<Option<(UserProfile, bool)>> {
        let row: Option<(String, String, String, i64, String, Option<String>, String, String, bool)> =
            sqlx::query_as(
                "SELECT id, first_name, last_name, privacy_mode, avatar, avatar_3d, company_name, company_title, \
                 EXISTS (SELECT 1 FROM connections c JOIN gateways g ON g.id = c.gateway_id \
                         WHERE c.user_id = $1 AND g.lease_expires_at_ms > $2) \
                 FROM users WHERE id = $1",
            )
            .bind(id.as_str())
            .bind(now_ms)
            .fetch_optional(&self.pool)
            .await?;
        row.map(
            |(id, first, last, privacy, avatar, avatar_3d, company, title, available)| {
                Ok((
                    user_from_row((id, first, last, privacy, avatar, avatar_3d, company, title))?,
                    available,
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
        let events = sqlx::query(PRUNE_OUTBOX)
            .bind(events_before_ms)
            .execute(&self.pool)
            .await?;
        let records = sqlx::query("DELETE FROM idempotency_records WHERE created_at_ms < $1")
            .bind(idempotency_before_ms)
            .execute(&self.pool)
            .await?;
        let rings = sqlx::query(calls::PRUNE_HISTORY)
            .bind(history_before_ms)
            .execute(&self.pool)
            .await?;
        Ok(events.rows_affected() + records.rows_affected() + rings.rows_affected())
    }

    async fn apply_room_event(&self, event: &RoomEvent) -> StoreResult<RoomApplied> {
        let mut tx = self.pool.begin().await?;
        let applied = calls::apply_room_event::<sqlx::Postgres>(&mut tx, event).await?;
        tx.commit().await?;
        Ok(applied)
    }

    async fn pending_invites(&self, videochat: &VideochatId) -> StoreResult<Vec<VideochatRequest>> {
        let rows: Vec<RequestRow> = sqlx::query_as(calls::PENDING_INVITES)
            .bind(videochat.as_str())
            .fetch_all(&self.pool)
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
        let page = calls::read_page(&self.pool, user, before, limit, now_ms).await?;
        if acknowledge {
            sqlx::query(calls::ACKNOWLEDGE)
                .bind(user.as_str())
                .bind(now_ms)
                .execute(&self.pool)
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
        let ids: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let counts: Vec<(String, i64)> = sqlx::query_as(calls::MISSED_COUNTS_POSTGRES)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        // One read per user who missed calls: rare when a socket connects.
        let mut out = Vec::new();
        for (user, count) in super::missed_counts(counts)? {
            let latest = calls::read_latest_missed(&self.pool, &user, now_ms).await?;
            out.push((user, count, latest));
        }
        Ok(out)
    }

    fn outbox_signal(&self) -> watch::Receiver<u64> {
        self.signal.subscribe()
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

impl PostgresStore {
    /// The rings ringing for `users` now, as each target is shown them: (target, ring).
    async fn rings_of(&self, users: &[&str], now_ms: i64) -> StoreResult<Vec<(UserId, Ring)>> {
        let rows: Vec<RequestRow> = sqlx::query_as(
            "SELECT id, kind, initiator_id, target_id, videochat_id, engine, status, created_at_ms, expires_at_ms \
             FROM videochat_requests WHERE target_id = ANY($1) AND status = 'pending' AND expires_at_ms > $2 \
             ORDER BY created_at_ms, id",
        )
        .bind(users)
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let rings = requests_from_rows(rows)?;
        let initiators: Vec<&str> = rings.iter().map(|r| r.initiator.as_str()).collect();
        let profiles: Vec<UserRow> = sqlx::query_as(
            "SELECT id, first_name, last_name, privacy_mode, avatar, avatar_3d, company_name, company_title \
             FROM users WHERE id = ANY($1)",
        )
        .bind(&initiators)
        .fetch_all(&self.pool)
        .await?;
        let profiles = profiles
            .into_iter()
            .map(user_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut shown = Vec::with_capacity(rings.len());
        for ring in &rings {
            let (participants, counter) = match &ring.videochat_id {
                Some(videochat) => super::participants_of(&self.pool, videochat.as_str()).await?,
                None => (Vec::new(), 0),
            };
            let initiator = profiles
                .iter()
                .find(|p| p.id == ring.initiator)
                .cloned()
                .unwrap_or_else(|| UserProfile::bare(ring.initiator.clone()));
            shown.push((
                ring.target.clone(),
                crate::machine::ring_shown(ring, initiator, participants, counter),
            ));
        }
        Ok(shown)
    }
}
