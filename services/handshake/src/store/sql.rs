//! The SQL both backends share, written once and expanded for each by [`sql_store!`].
//!
//! Both dialects accept this SQL as written: `$n` placeholders, `ON CONFLICT`, `RETURNING`,
//! partial unique indexes, integers as 64-bit. What differs — how the outbox serializes its
//! writers and how other replicas hear of new events — comes in as the macro's arguments.
//! A macro rather than generics over `sqlx::Database`: concrete types keep the code readable
//! and the compiler errors short.

use crate::domain::{
    Avatar3D, Participant, Permissions, RequestKind, RequestStatus, UserId, UserProfile,
    VideochatId, VideochatMode, VideochatRequest,
};
use crate::engine::EngineKind;

use super::{StoreError, StoreResult};

/// Columns read into a [`RequestRow`]; a macro so that queries stay `&'static str` (sqlx
/// refuses SQL built at run time unless it is vouched for).
macro_rules! request_columns {
    () => {
        "id, kind, initiator_id, target_id, videochat_id, engine, status, created_at_ms, expires_at_ms"
    };
}
pub(super) use request_columns;

/// Columns read into a [`UserRow`].
macro_rules! user_columns {
    () => {
        "id, first_name, last_name, privacy_mode, avatar, avatar_3d, company_name, company_title"
    };
}
pub(super) use user_columns;

pub(super) type RequestRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
    i64,
);

pub(super) type UserRow = (
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    String,
    String,
);

fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

pub(super) fn request_from_row(row: RequestRow) -> StoreResult<VideochatRequest> {
    let (id, kind, initiator, target, videochat_id, engine, status, created, expires) = row;
    let table = "videochat_requests";
    Ok(VideochatRequest {
        id: id.try_into().map_err(|e| corrupt(table, e))?,
        kind: RequestKind::parse(&kind).ok_or_else(|| corrupt(table, format!("kind {kind}")))?,
        initiator: initiator.try_into().map_err(|e| corrupt(table, e))?,
        target: target.try_into().map_err(|e| corrupt(table, e))?,
        videochat_id: videochat_id
            .map(VideochatId::try_from)
            .transpose()
            .map_err(|e| corrupt(table, e))?,
        engine: engine
            .parse::<EngineKind>()
            .map_err(|e| corrupt(table, e))?,
        status: RequestStatus::parse(&status)
            .ok_or_else(|| corrupt(table, format!("status {status}")))?,
        created_at_ms: created,
        expires_at_ms: expires,
    })
}

pub(super) fn requests_from_rows(rows: Vec<RequestRow>) -> StoreResult<Vec<VideochatRequest>> {
    rows.into_iter().map(request_from_row).collect()
}

pub(super) fn user_from_row(row: UserRow) -> StoreResult<UserProfile> {
    let (id, first_name, last_name, privacy_mode, avatar, avatar_3d, company_name, company_title) =
        row;
    let avatar_3d = match avatar_3d {
        Some(json) => {
            Some(serde_json::from_str::<Avatar3D>(&json).map_err(|e| corrupt("users", e))?)
        }
        None => None,
    };
    Ok(UserProfile {
        id: id.try_into().map_err(|e| corrupt("users", e))?,
        first_name,
        last_name,
        privacy_mode: i32::try_from(privacy_mode).map_err(|e| corrupt("users", e))?,
        avatar,
        avatar_3d,
        company_name,
        company_title,
    })
}

pub(super) fn avatar_3d_json(user: &UserProfile) -> StoreResult<Option<String>> {
    user.avatar_3d
        .as_ref()
        .filter(|a| !a.is_empty())
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| corrupt("users", e))
}

pub(super) fn participant_from_row(
    videochat_id: &VideochatId,
    user_id: &UserId,
    uid: i64,
    permissions: i64,
) -> StoreResult<Participant> {
    Ok(Participant {
        videochat_id: videochat_id.clone(),
        user_id: user_id.clone(),
        uid: u32::try_from(uid).map_err(|e| corrupt("participants", e))?,
        permissions: Permissions::from_bits(permissions),
    })
}

pub(super) fn videochat_from_row(
    row: (String, String, String, String, String, i64),
) -> StoreResult<crate::domain::Videochat> {
    let (id, mode, engine, room, shared_secret, created_at_ms) = row;
    Ok(crate::domain::Videochat {
        id: id.try_into().map_err(|e| corrupt("videochats", e))?,
        mode: VideochatMode::parse(&mode).ok_or_else(|| corrupt("videochats", &mode))?,
        engine: engine.parse().map_err(|e| corrupt("videochats", e))?,
        room,
        shared_secret,
        created_at_ms,
    })
}

/// Expands to the transaction type `$tx` (implementing `StoreTx`) and the `Store`
/// implementation for `$store`, over the sqlx database `$db`.
///
/// `$lock_outbox`: SQL run before appending events so that outbox positions become visible in
/// the order they were allocated (readers must never skip a position that commits later).
/// `$notify`: SQL run after appending, telling other replicas there are new events.
macro_rules! sql_store {
    ($store:ident, $tx:ident, $db:ty, backend = $backend:literal, db_system = $db_system:literal, lock_outbox = $lock_outbox:expr, notify = $notify:expr) => {
        /// One transaction on this backend.
        pub struct $tx {
            tx: sqlx::Transaction<'static, $db>,
            appended_events: bool,
            signal: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
        }

        #[async_trait::async_trait]
        impl $crate::store::StoreTx for $tx {
            #[tracing::instrument(name = "store.user", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn user(&mut self, id: &UserId) -> StoreResult<Option<UserProfile>> {
                let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
                let row: Option<UserRow> = sqlx::query_as(sql)
                    .bind(id.as_str())
                    .fetch_optional(&mut *self.tx)
                    .await?;
                row.map(user_from_row).transpose()
            }

            #[tracing::instrument(name = "store.upsert_user", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn upsert_user(&mut self, user: &UserProfile, now_ms: i64) -> StoreResult<()> {
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
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            #[tracing::instrument(name = "store.patch_user", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn patch_user(&mut self, id: &UserId, patch: &UserPatch, now_ms: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO users (id, first_name, last_name, privacy_mode, avatar, avatar_3d, company_name, company_title, updated_at_ms) \
                     VALUES ($1, COALESCE($2, ''), COALESCE($3, ''), COALESCE($4, 0), COALESCE($5, ''), NULL, COALESCE($6, ''), COALESCE($7, ''), $8) \
                     ON CONFLICT (id) DO UPDATE SET first_name = COALESCE($2, users.first_name), last_name = COALESCE($3, users.last_name), \
                     privacy_mode = COALESCE($4, users.privacy_mode), avatar = COALESCE($5, users.avatar), \
                     company_name = COALESCE($6, users.company_name), company_title = COALESCE($7, users.company_title), updated_at_ms = $8",
                )
                .bind(id.as_str())
                .bind(patch.first_name.as_deref())
                .bind(patch.last_name.as_deref())
                .bind(patch.privacy_mode.map(i64::from))
                .bind(patch.avatar.as_deref())
                .bind(patch.company_name.as_deref())
                .bind(patch.company_title.as_deref())
                .bind(now_ms)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            #[tracing::instrument(name = "store.is_available", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn is_available(&mut self, id: &UserId, now_ms: i64) -> StoreResult<bool> {
                let (count,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM connections c JOIN gateways g ON g.id = c.gateway_id \
                     WHERE c.user_id = $1 AND g.lease_expires_at_ms > $2",
                )
                .bind(id.as_str())
                .bind(now_ms)
                .fetch_one(&mut *self.tx)
                .await?;
                Ok(count > 0)
            }

            #[tracing::instrument(name = "store.request", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn request(&mut self, id: &RequestId) -> StoreResult<Option<VideochatRequest>> {
                let sql = concat!("SELECT ", request_columns!(), " FROM videochat_requests WHERE id = $1");
                let row: Option<RequestRow> = sqlx::query_as(sql)
                    .bind(id.as_str())
                    .fetch_optional(&mut *self.tx)
                    .await?;
                row.map(request_from_row).transpose()
            }

            #[tracing::instrument(name = "store.pending_direct_between", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn pending_direct_between(&mut self, a: &UserId, b: &UserId) -> StoreResult<Option<VideochatRequest>> {
                let sql = concat!("SELECT ", request_columns!(), " FROM videochat_requests WHERE pair_key = $1 AND kind = 'direct' AND status = 'pending'");
                let row: Option<RequestRow> = sqlx::query_as(sql)
                    .bind(VideochatRequest::pair_key(a, b))
                    .fetch_optional(&mut *self.tx)
                    .await?;
                row.map(request_from_row).transpose()
            }

            #[tracing::instrument(name = "store.pending_invite", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn pending_invite(&mut self, videochat: &VideochatId, target: &UserId) -> StoreResult<Option<VideochatRequest>> {
                let sql = concat!("SELECT ", request_columns!(), " FROM videochat_requests WHERE videochat_id = $1 AND target_id = $2 AND kind = 'invite' AND status = 'pending'");
                let row: Option<RequestRow> = sqlx::query_as(sql)
                    .bind(videochat.as_str())
                    .bind(target.as_str())
                    .fetch_optional(&mut *self.tx)
                    .await?;
                row.map(request_from_row).transpose()
            }

            #[tracing::instrument(name = "store.insert_request", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn insert_request(&mut self, r: &VideochatRequest) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO videochat_requests (id, kind, initiator_id, target_id, videochat_id, engine, status, pair_key, created_at_ms, expires_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(r.id.as_str())
                .bind(r.kind.as_str())
                .bind(r.initiator.as_str())
                .bind(r.target.as_str())
                .bind(r.videochat_id.as_ref().map(|v| v.as_str()))
                .bind(r.engine.as_str())
                .bind(r.status.as_str())
                .bind(VideochatRequest::pair_key(&r.initiator, &r.target))
                .bind(r.created_at_ms)
                .bind(r.expires_at_ms)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            #[tracing::instrument(name = "store.finish_request", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn finish_request(&mut self, id: &RequestId, status: RequestStatus, now_ms: i64) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE videochat_requests SET status = $2, answered_at_ms = $3 WHERE id = $1 AND status = 'pending'",
                )
                .bind(id.as_str())
                .bind(status.as_str())
                .bind(now_ms)
                .execute(&mut *self.tx)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            #[tracing::instrument(name = "store.ringing_for", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn ringing_for(&mut self, target: &UserId, now_ms: i64) -> StoreResult<Vec<VideochatRequest>> {
                let sql = concat!("SELECT ", request_columns!(), " FROM videochat_requests WHERE target_id = $1 AND status = 'pending' AND expires_at_ms > $2 ORDER BY created_at_ms, id");
                let rows: Vec<RequestRow> = sqlx::query_as(sql)
                    .bind(target.as_str())
                    .bind(now_ms)
                    .fetch_all(&mut *self.tx)
                    .await?;
                requests_from_rows(rows)
            }

            #[tracing::instrument(name = "store.due_requests", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn due_requests(&mut self, now_ms: i64, limit: i64) -> StoreResult<Vec<VideochatRequest>> {
                let sql = concat!("SELECT ", request_columns!(), " FROM videochat_requests WHERE status = 'pending' AND expires_at_ms <= $1 ORDER BY expires_at_ms, id LIMIT $2");
                let rows: Vec<RequestRow> = sqlx::query_as(sql)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(&mut *self.tx)
                    .await?;
                requests_from_rows(rows)
            }

            #[tracing::instrument(name = "store.insert_videochat", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn insert_videochat(&mut self, v: &crate::domain::Videochat) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO videochats (id, mode, engine, room, shared_secret, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(v.id.as_str())
                .bind(v.mode.as_str())
                .bind(v.engine.as_str())
                .bind(&v.room)
                .bind(&v.shared_secret)
                .bind(v.created_at_ms)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            #[tracing::instrument(name = "store.videochat", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn videochat(&mut self, id: &VideochatId) -> StoreResult<Option<crate::domain::Videochat>> {
                let row: Option<(String, String, String, String, String, i64)> = sqlx::query_as(
                    "SELECT id, mode, engine, room, shared_secret, created_at_ms FROM videochats WHERE id = $1",
                )
                .bind(id.as_str())
                .fetch_optional(&mut *self.tx)
                .await?;
                row.map(videochat_from_row).transpose()
            }

            #[tracing::instrument(name = "store.participant", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn participant(&mut self, videochat: &VideochatId, user: &UserId) -> StoreResult<Option<Participant>> {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT uid, permissions FROM participants WHERE videochat_id = $1 AND user_id = $2",
                )
                .bind(videochat.as_str())
                .bind(user.as_str())
                .fetch_optional(&mut *self.tx)
                .await?;
                row.map(|(uid, permissions)| participant_from_row(videochat, user, uid, permissions))
                    .transpose()
            }

            #[tracing::instrument(name = "store.add_participant", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn add_participant(&mut self, videochat: &VideochatId, user: &UserId, permissions: Permissions, now_ms: i64) -> StoreResult<Participant> {
                let (uid,): (i64,) = sqlx::query_as(
                    "INSERT INTO participants (videochat_id, user_id, uid, permissions, joined_at_ms) \
                     SELECT $1, $2, COALESCE(MAX(uid), 0) + 1, $3, $4 FROM participants WHERE videochat_id = $1 \
                     RETURNING uid",
                )
                .bind(videochat.as_str())
                .bind(user.as_str())
                .bind(permissions.to_bits())
                .bind(now_ms)
                .fetch_one(&mut *self.tx)
                .await?;
                participant_from_row(videochat, user, uid, permissions.to_bits())
            }

            #[tracing::instrument(name = "store.participant_count", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn participant_count(&mut self, videochat: &VideochatId) -> StoreResult<u32> {
                let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM participants WHERE videochat_id = $1")
                    .bind(videochat.as_str())
                    .fetch_one(&mut *self.tx)
                    .await?;
                Ok(u32::try_from(count).unwrap_or(u32::MAX))
            }

            #[tracing::instrument(name = "store.participant_profiles", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn participant_profiles(&mut self, videochat: &VideochatId, limit: i64) -> StoreResult<Vec<UserProfile>> {
                type Row = (String, Option<String>, Option<String>, Option<i64>, Option<String>, Option<String>, Option<String>, Option<String>);
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT p.user_id, u.first_name, u.last_name, u.privacy_mode, u.avatar, u.avatar_3d, u.company_name, u.company_title \
                     FROM participants p LEFT JOIN users u ON u.id = p.user_id \
                     WHERE p.videochat_id = $1 ORDER BY p.uid LIMIT $2",
                )
                .bind(videochat.as_str())
                .bind(limit)
                .fetch_all(&mut *self.tx)
                .await?;
                rows.into_iter()
                    .map(|(id, first, last, privacy, avatar, avatar_3d, company, title)| {
                        user_from_row((
                            id,
                            first.unwrap_or_default(),
                            last.unwrap_or_default(),
                            privacy.unwrap_or_default(),
                            avatar.unwrap_or_default(),
                            avatar_3d,
                            company.unwrap_or_default(),
                            title.unwrap_or_default(),
                        ))
                    })
                    .collect()
            }

            #[tracing::instrument(name = "store.idempotency_record", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn idempotency_record(&mut self, user: &UserId, key: &IdempotencyKey) -> StoreResult<Option<IdempotencyRecord>> {
                let row: Option<(String, Option<Vec<u8>>, Option<i64>, Option<String>, i64)> = sqlx::query_as(
                    "SELECT operation, reply, error_code, error_message, created_at_ms FROM idempotency_records \
                     WHERE user_id = $1 AND key = $2",
                )
                .bind(user.as_str())
                .bind(key.as_str())
                .fetch_optional(&mut *self.tx)
                .await?;
                Ok(row.map(|(operation, reply, code, message, created_at_ms)| IdempotencyRecord {
                    user_id: user.clone(),
                    key: key.clone(),
                    operation,
                    outcome: match (reply, code) {
                        (Some(reply), _) => RecordedOutcome::Reply(reply),
                        (None, code) => RecordedOutcome::Error {
                            code: code.and_then(|c| i32::try_from(c).ok()).unwrap_or(1004),
                            message: message.unwrap_or_default(),
                        },
                    },
                    created_at_ms,
                }))
            }

            #[tracing::instrument(name = "store.record_idempotency", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn record_idempotency(&mut self, record: &IdempotencyRecord) -> StoreResult<()> {
                let (reply, code, message) = match &record.outcome {
                    RecordedOutcome::Reply(reply) => (Some(reply.as_slice()), None, None),
                    RecordedOutcome::Error { code, message } => (None, Some(i64::from(*code)), Some(message.as_str())),
                };
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
                .execute(&mut *self.tx)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::Conflict);
                }
                Ok(())
            }

            #[tracing::instrument(name = "store.append_events", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn append_events(&mut self, events: &[NewEvent]) -> StoreResult<()> {
                if events.is_empty() {
                    return Ok(());
                }
                let lock: Option<&str> = $lock_outbox;
                if let Some(lock) = lock {
                    sqlx::query(lock).execute(&mut *self.tx).await?;
                }
                for event in events {
                    sqlx::query(
                        "INSERT INTO outbox_events (event_id, recipient_user_id, payload, traceparent, created_at_ms) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&event.event_id)
                    .bind(event.recipient.as_str())
                    .bind(event.payload.as_slice())
                    .bind(&event.traceparent)
                    .bind(event.created_at_ms)
                    .execute(&mut *self.tx)
                    .await?;
                }
                let notify: Option<&str> = $notify;
                if let Some(notify) = notify {
                    sqlx::query(notify).execute(&mut *self.tx).await?;
                }
                self.appended_events = true;
                Ok(())
            }

            #[tracing::instrument(name = "store.upsert_gateway_lease", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn upsert_gateway_lease(&mut self, gateway: &GatewayId, expires_at_ms: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO gateways (id, lease_expires_at_ms) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET lease_expires_at_ms = excluded.lease_expires_at_ms",
                )
                .bind(gateway.as_str())
                .bind(expires_at_ms)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            #[tracing::instrument(name = "store.open_connection", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn open_connection(&mut self, connection: &ConnectionId, user: &UserId, gateway: &GatewayId, now_ms: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO connections (id, user_id, gateway_id, connected_at_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(connection.as_str())
                .bind(user.as_str())
                .bind(gateway.as_str())
                .bind(now_ms)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            #[tracing::instrument(name = "store.commit", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn commit(self: Box<Self>) -> StoreResult<()> {
                let appended = self.appended_events;
                let signal = self.signal.clone();
                self.tx.commit().await?;
                if appended {
                    $crate::store::bump(&signal);
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn begin(&self) -> StoreResult<Box<dyn $crate::store::StoreTx + '_>> {
                let tx = self.pool.begin().await?;
                Ok(Box::new($tx {
                    tx,
                    appended_events: false,
                    signal: self.signal.clone(),
                }))
            }

            #[tracing::instrument(name = "store.close_connection", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn close_connection(&self, connection: &ConnectionId) -> StoreResult<()> {
                sqlx::query("DELETE FROM connections WHERE id = $1")
                    .bind(connection.as_str())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            #[tracing::instrument(name = "store.renew_gateway_lease", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn renew_gateway_lease(&self, gateway: &GatewayId, expires_at_ms: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO gateways (id, lease_expires_at_ms) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE SET lease_expires_at_ms = excluded.lease_expires_at_ms",
                )
                .bind(gateway.as_str())
                .bind(expires_at_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            #[tracing::instrument(name = "store.sweep_dead_gateways", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
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

            #[tracing::instrument(name = "store.latest_seq", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn latest_seq(&self) -> StoreResult<u64> {
                let (seq,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM outbox_events")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(seq).unwrap_or_default())
            }

            #[tracing::instrument(name = "store.events_for_gateway", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn events_for_gateway(&self, gateway: &GatewayId, after: u64, upto: u64, limit: i64) -> StoreResult<Vec<StoredEvent>> {
                let rows: Vec<(i64, String, String, Vec<u8>, String, i64)> = sqlx::query_as(
                    "SELECT o.seq, o.event_id, o.recipient_user_id, o.payload, o.traceparent, o.created_at_ms \
                     FROM outbox_events o \
                     WHERE o.seq > $1 AND o.seq <= $2 \
                       AND o.recipient_user_id IN (SELECT c.user_id FROM connections c WHERE c.gateway_id = $3) \
                     ORDER BY o.seq LIMIT $4",
                )
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(i64::try_from(upto).unwrap_or(i64::MAX))
                .bind(gateway.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(seq, event_id, recipient, payload, traceparent, created_at_ms)| {
                        Ok(StoredEvent {
                            seq: u64::try_from(seq).unwrap_or_default(),
                            event_id,
                            recipient: UserId::parse(recipient).map_err(|e| StoreError::Corrupt {
                                table: "outbox_events",
                                detail: e.to_string(),
                            })?,
                            payload,
                            traceparent,
                            created_at_ms,
                        })
                    })
                    .collect()
            }

            #[tracing::instrument(name = "store.next_expiry", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn next_expiry(&self) -> StoreResult<Option<i64>> {
                let (next,): (Option<i64>,) =
                    sqlx::query_as("SELECT MIN(expires_at_ms) FROM videochat_requests WHERE status = 'pending'")
                        .fetch_one(&self.pool)
                        .await?;
                Ok(next)
            }

            #[tracing::instrument(name = "store.prune", skip_all, fields(db.system = $db_system, otel.kind = "client"))]
            async fn prune(&self, events_before_ms: i64, idempotency_before_ms: i64) -> StoreResult<u64> {
                let events = sqlx::query("DELETE FROM outbox_events WHERE created_at_ms < $1")
                    .bind(events_before_ms)
                    .execute(&self.pool)
                    .await?;
                let records = sqlx::query("DELETE FROM idempotency_records WHERE created_at_ms < $1")
                    .bind(idempotency_before_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(events.rows_affected() + records.rows_affected())
            }

            fn outbox_signal(&self) -> tokio::sync::watch::Receiver<u64> {
                self.signal.subscribe()
            }


            fn backend(&self) -> &'static str {
                $backend
            }
        }
    };
}

pub(super) use sql_store;
