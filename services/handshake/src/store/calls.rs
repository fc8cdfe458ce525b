//! Call history and room presence: the SQL both backends share.
//!
//! History reads the rings (see [`crate::history`]); room events update `participants` and
//! `videochats` (see [`crate::engine::events`]). Reads run on any connection; the writes here
//! are small, run outside the handshake's batched write path (they are rare next to
//! handshakes), and each backend runs them where it writes (SQLite: its one writer).

use sqlx::FromRow;

use crate::domain::{RequestKind, RequestStatus, UserId, VideochatId};
use crate::engine::events::{RoomChange, RoomEvent};
use crate::history::{CallEntry, RoomTime, StoredCall};

use super::rows::user_from_row;
use super::{StoreError, StoreResult};

/// What applying a room event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomApplied {
    /// No videochat has that room (on that engine).
    UnknownRoom,
    /// The videochat is over; nothing reopens it.
    Over,
    /// Nothing changed: the user is not a participant, or a newer event was applied already.
    Unchanged,
    Applied {
        videochat: VideochatId,
        /// The room finished and the videochat ended with this event.
        finished: bool,
    },
}

/// `$1` room, `$2` engine. Room names are unique per engine (they are our videochat ids).
pub(super) const FIND_VIDEOCHAT: &str =
    "SELECT id, ended_at_ms FROM videochats WHERE room = $1 AND engine = $2 LIMIT 1";

/// `$1` videochat, `$2` user, `$3` when. A join older than the last event applied is late; at
/// the same instant a leave wins (a join and a leave in one second mostly mean a short visit).
pub(super) const JOINED: &str = "UPDATE participants SET left_at_ms = NULL, \
     room_since_ms = COALESCE(room_since_ms, $3), room_event_at_ms = $3 \
     WHERE videochat_id = $1 AND user_id = $2 AND room_event_at_ms < $3 RETURNING user_id";

/// `$1` videochat, `$2` user, `$3` when.
pub(super) const LEFT: &str = "UPDATE participants SET left_at_ms = $3, \
     room_ms = room_ms + CASE WHEN room_since_ms IS NOT NULL AND $3 > room_since_ms \
                              THEN $3 - room_since_ms ELSE 0 END, \
     room_since_ms = NULL, room_event_at_ms = $3 \
     WHERE videochat_id = $1 AND user_id = $2 AND room_event_at_ms <= $3 RETURNING user_id";

/// `$1` videochat, `$2` when.
pub(super) const END_VIDEOCHAT: &str =
    "UPDATE videochats SET ended_at_ms = $2 WHERE id = $1 AND ended_at_ms IS NULL RETURNING id";

/// `$1` videochat, `$2` when: everyone still in is out, their stay counted.
pub(super) const EVERYONE_OUT: &str = "UPDATE participants SET \
     left_at_ms = COALESCE(left_at_ms, $2), \
     room_ms = room_ms + CASE WHEN room_since_ms IS NOT NULL AND $2 > room_since_ms \
                              THEN $2 - room_since_ms ELSE 0 END, \
     room_since_ms = NULL, \
     room_event_at_ms = CASE WHEN room_event_at_ms > $2 THEN room_event_at_ms ELSE $2 END \
     WHERE videochat_id = $1";

/// `$1` videochat: invites into it still ringing (ended with it).
pub(super) const PENDING_INVITES: &str = "SELECT id, kind, initiator_id, target_id, videochat_id, \
     engine, status, created_at_ms, expires_at_ms FROM videochat_requests \
     WHERE videochat_id = $1 AND kind = 'invite' AND status = 'pending'";

/// The statement for a presence change, or `None` for the end of the room.
fn presence_statement(event: &RoomEvent) -> Option<(&'static str, &UserId)> {
    match &event.change {
        RoomChange::Joined(user) => Some((JOINED, user)),
        RoomChange::Left(user) => Some((LEFT, user)),
        RoomChange::Finished => None,
    }
}

/// Applies a room event inside `tx`, the same on both backends (each runs it where it writes).
/// The writes say whether they changed a row by what they return, which both backends report
/// alike.
pub(super) async fn apply_room_event<DB>(
    tx: &mut DB::Connection,
    event: &RoomEvent,
) -> StoreResult<RoomApplied>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> (String, Option<i64>): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let found: Option<(String, Option<i64>)> = sqlx::query_as(FIND_VIDEOCHAT)
        .bind(event.room.as_str())
        .bind(event.engine.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let Some((id, ended)) = found else {
        return Ok(RoomApplied::UnknownRoom);
    };
    if ended.is_some() {
        return Ok(RoomApplied::Over);
    }
    let videochat = super::rows::videochat_id(id)?;
    if let Some((statement, user)) = presence_statement(event) {
        let changed: Option<(String,)> = sqlx::query_as(statement)
            .bind(videochat.as_str())
            .bind(user.as_str())
            .bind(event.at_ms)
            .fetch_optional(&mut *tx)
            .await?;
        return Ok(match changed {
            None => RoomApplied::Unchanged,
            Some(_) => RoomApplied::Applied {
                videochat,
                finished: false,
            },
        });
    }
    let ended: Option<(String,)> = sqlx::query_as(END_VIDEOCHAT)
        .bind(videochat.as_str())
        .bind(event.at_ms)
        .fetch_optional(&mut *tx)
        .await?;
    if ended.is_none() {
        // Another writer ended it between the read and this write.
        return Ok(RoomApplied::Over);
    }
    sqlx::query(EVERYONE_OUT)
        .bind(videochat.as_str())
        .bind(event.at_ms)
        .execute(&mut *tx)
        .await?;
    Ok(RoomApplied::Applied {
        videochat,
        finished: true,
    })
}

/// The columns of one history entry as the user `$1` sees it.
macro_rules! call_columns {
    () => {
        "SELECT r.id, r.kind, r.status, r.initiator_id = $1 AS outgoing, r.videochat_id, \
         r.created_at_ms, r.answered_at_ms, \
         CASE WHEN r.initiator_id = $1 THEN r.target_id ELSE r.initiator_id END AS other_id, \
         COALESCE(u.first_name, '') AS first_name, COALESCE(u.last_name, '') AS last_name, \
         COALESCE(u.privacy_mode, 0) AS privacy_mode, COALESCE(u.avatar, '') AS avatar, \
         u.avatar_3d, COALESCE(u.company_name, '') AS company_name, \
         COALESCE(u.company_title, '') AS company_title, \
         p.room_ms, p.room_since_ms, p.left_at_ms, p.room_event_at_ms, v.ended_at_ms \
         FROM "
    };
}

/// The other side's profile, the user's own participant row and the videochat, for rings `r`.
macro_rules! call_joins {
    () => {
        " LEFT JOIN users u ON u.id = CASE WHEN r.initiator_id = $1 THEN r.target_id ELSE r.initiator_id END \
         LEFT JOIN participants p ON p.videochat_id = r.videochat_id AND p.user_id = $1 \
         LEFT JOIN videochats v ON v.id = r.videochat_id"
    };
}

/// `$1` user, `$2` before (exclusive), `$3` how many: the user's rings that ended, both ways,
/// newest first (each direction is one index range, see migrations 0005 and 0007).
pub(super) const LIST_CALLS: &str = concat!(
    call_columns!(),
    "(SELECT * FROM (SELECT id, kind, status, initiator_id, target_id, videochat_id, created_at_ms, \
     answered_at_ms FROM videochat_requests WHERE initiator_id = $1 AND created_at_ms < $2 \
     AND status <> 'pending' ORDER BY created_at_ms DESC, id DESC LIMIT $3) mine \
     UNION ALL \
     SELECT * FROM (SELECT id, kind, status, initiator_id, target_id, videochat_id, created_at_ms, \
     answered_at_ms FROM videochat_requests WHERE target_id = $1 AND created_at_ms < $2 \
     AND status <> 'pending' ORDER BY created_at_ms DESC, id DESC LIMIT $3) theirs) r",
    call_joins!(),
    " ORDER BY r.created_at_ms DESC, r.id DESC LIMIT $3",
);

/// `$1` user, `$2` how many: the newest calls the user missed since they last listed.
pub(super) const LATEST_MISSED: &str = concat!(
    call_columns!(),
    "videochat_requests r",
    call_joins!(),
    " WHERE r.target_id = $1 AND r.status = 'expired' AND r.answered_at_ms > \
     COALESCE((SELECT listed_at_ms FROM call_history_reads WHERE user_id = $1), 0) \
     ORDER BY r.created_at_ms DESC, r.id DESC LIMIT $2",
);

/// `$1` user: how many calls they missed since they last listed.
pub(super) const MISSED_COUNT: &str = "SELECT COUNT(*) FROM videochat_requests r \
     WHERE r.target_id = $1 AND r.status = 'expired' AND r.answered_at_ms > \
     COALESCE((SELECT listed_at_ms FROM call_history_reads WHERE user_id = $1), 0)";

/// How many calls each user of a batch missed since they last listed; the batch is `$1`, spelled
/// by each backend (`= ANY($1)` on Postgres, `IN (SELECT value FROM json_each($1))` on SQLite).
macro_rules! missed_counts {
    ($users:literal) => {
        concat!(
            "SELECT r.target_id, COUNT(*) FROM videochat_requests r \
             LEFT JOIN call_history_reads h ON h.user_id = r.target_id \
             WHERE r.target_id ",
            $users,
            " AND r.status = 'expired' AND r.answered_at_ms > COALESCE(h.listed_at_ms, 0) \
             GROUP BY r.target_id"
        )
    };
}
pub(super) const MISSED_COUNTS_POSTGRES: &str = missed_counts!("= ANY($1::text[])");
pub(super) const MISSED_COUNTS_SQLITE: &str =
    missed_counts!("IN (SELECT value FROM json_each($1))");

/// `$1` user, `$2` now: the user has seen their missed calls.
pub(super) const ACKNOWLEDGE: &str = "INSERT INTO call_history_reads (user_id, listed_at_ms) \
     VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE SET listed_at_ms = excluded.listed_at_ms";

/// `$1` before: rings that ended before it are forgotten (history retention).
pub(super) const PRUNE_HISTORY: &str =
    "DELETE FROM videochat_requests WHERE status <> 'pending' AND created_at_ms < $1";

/// One row of [`LIST_CALLS`] or [`LATEST_MISSED`].
#[derive(Debug, FromRow)]
pub(super) struct CallRow {
    id: String,
    kind: String,
    status: String,
    outgoing: bool,
    videochat_id: Option<String>,
    created_at_ms: i64,
    answered_at_ms: Option<i64>,
    other_id: String,
    first_name: String,
    last_name: String,
    privacy_mode: i64,
    avatar: String,
    avatar_3d: Option<String>,
    company_name: String,
    company_title: String,
    room_ms: Option<i64>,
    room_since_ms: Option<i64>,
    left_at_ms: Option<i64>,
    room_event_at_ms: Option<i64>,
    ended_at_ms: Option<i64>,
}

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table: "videochat_requests",
        detail: detail.to_string(),
    }
}

impl CallRow {
    /// The entry the user sees at `now_ms` (`None` for a ring still ringing).
    pub(super) fn entry(self, now_ms: i64) -> StoreResult<Option<CallEntry>> {
        let room = self.room_ms.map(|past_ms| RoomTime {
            past_ms,
            since_ms: self.room_since_ms,
            left_at_ms: self.left_at_ms,
            reported: self.room_event_at_ms.unwrap_or_default() > 0,
        });
        let stored = StoredCall {
            request_id: self.id.try_into().map_err(corrupt)?,
            kind: RequestKind::parse(&self.kind).ok_or_else(|| corrupt(&self.kind))?,
            status: RequestStatus::parse(&self.status).ok_or_else(|| corrupt(&self.status))?,
            outgoing: self.outgoing,
            other: user_from_row((
                self.other_id,
                self.first_name,
                self.last_name,
                self.privacy_mode,
                self.avatar,
                self.avatar_3d,
                self.company_name,
                self.company_title,
            ))?,
            videochat_id: self
                .videochat_id
                .map(VideochatId::try_from)
                .transpose()
                .map_err(corrupt)?,
            created_at_ms: self.created_at_ms,
            finished_at_ms: self.answered_at_ms,
            room,
            videochat_ended_at_ms: self.ended_at_ms,
        };
        Ok(stored.entry(now_ms))
    }
}

/// Rows into entries, dropping any still ringing.
pub(super) fn entries(rows: Vec<CallRow>, now_ms: i64) -> StoreResult<Vec<CallEntry>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(entry) = row.entry(now_ms)? {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Reads a page of history and the missed count, the same SQL on both backends.
pub(super) async fn read_page<DB>(
    pool: &sqlx::Pool<DB>,
    user: &UserId,
    before: Option<i64>,
    limit: u32,
    now_ms: i64,
) -> StoreResult<crate::history::CallPage>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> CallRow: sqlx::FromRow<'r, DB::Row>,
    for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
{
    let limit = limit.clamp(1, crate::history::MAX_PAGE) as usize;
    let rows: Vec<CallRow> = sqlx::query_as(LIST_CALLS)
        .bind(user.as_str())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    let (calls, next) = crate::history::paginate(entries(rows, now_ms)?, limit);
    let (missed,): (i64,) = sqlx::query_as(MISSED_COUNT)
        .bind(user.as_str())
        .fetch_one(pool)
        .await?;
    Ok(crate::history::CallPage {
        calls,
        next,
        missed_count: u32::try_from(missed).unwrap_or(u32::MAX),
    })
}

/// The newest missed calls of `user` since they last listed.
pub(super) async fn read_latest_missed<DB>(
    pool: &sqlx::Pool<DB>,
    user: &UserId,
    now_ms: i64,
) -> StoreResult<Vec<CallEntry>>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> CallRow: sqlx::FromRow<'r, DB::Row>,
{
    let rows: Vec<CallRow> = sqlx::query_as(LATEST_MISSED)
        .bind(user.as_str())
        .bind(crate::history::MISSED_SHOWN)
        .fetch_all(pool)
        .await?;
    entries(rows, now_ms)
}
