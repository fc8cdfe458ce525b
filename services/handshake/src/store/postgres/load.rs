//! The facts of many operations of one kind in one statement.
//!
//! Each kind's query is the per-operation query of [`crate::store::facts`] (the same tagged
//! rows: a fact name, seven texts, two integers, a blob) turned into a join over arrays of the
//! operations' parameters, with the operation's index in front of every row. One SQL text per
//! kind serves every batch size, so each is prepared once per connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgConnection, PgPool, Postgres};

use super::batch::Run;
use crate::change::Facts;
use crate::domain::{IdempotencyKey, RequestId, UserId, VideochatId, VideochatRequest};
use crate::machine::{Command, INVITE_WINDOW_MS, MAX_RING_PARTICIPANTS};
use crate::store::StoreResult;
use crate::store::facts::{FactRow, facts_from_rows};

/// One operation whose facts are wanted.
pub(in crate::store) struct LoadJob {
    pub actor: UserId,
    pub key: IdempotencyKey,
    pub command: Command,
    pub now_ms: i64,
}

/// A tagged fact row with the index of the operation it belongs to.
type OpFactRow = (
    i32,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
);

macro_rules! idempotency_of_q {
    () => {
        "SELECT q.op, 'idempotency', i.operation, i.error_message, NULL, NULL, NULL, NULL, NULL, \
         i.error_code, i.created_at_ms, i.reply \
         FROM q JOIN idempotency_records i ON i.user_id = q.actor AND i.key = q.key"
    };
}

macro_rules! user_columns {
    () => {
        "'user', u.id, u.first_name, u.last_name, u.avatar, u.avatar_3d, u.company_name, \
         u.company_title, u.privacy_mode, NULL, NULL"
    };
}

macro_rules! request_columns {
    () => {
        "'request', v.id, v.kind, v.initiator_id, v.target_id, v.videochat_id, v.engine, v.status, \
         v.created_at_ms, v.expires_at_ms, v.push_devices"
    };
}

macro_rules! videochat_columns {
    () => {
        "'videochat', c.id, c.mode, c.engine, c.room, c.shared_secret, NULL, NULL, \
         c.created_at_ms, c.ended_at_ms, NULL"
    };
}

macro_rules! member_columns {
    () => {
        "'member', p.user_id, CASE WHEN p.left_at_ms IS NULL THEN NULL ELSE 'left' END, NULL, NULL, \
         NULL, NULL, NULL, p.uid, p.permissions, NULL"
    };
}

/// The request columns of the `r` CTE (a request row with the operation's actor in front).
macro_rules! request_columns_of_r {
    () => {
        "'request', r.id, r.kind, r.initiator_id, r.target_id, r.videochat_id, r.engine, r.status, \
         r.created_at_ms, r.expires_at_ms, r.push_devices"
    };
}
/// How many rings each operation's actor has ringing at `$6` (the pending-rings limit).
macro_rules! outgoing_of_q {
    () => {
        "SELECT q.op, 'outgoing', NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         (SELECT COUNT(*) FROM videochat_requests v WHERE v.initiator_id = q.actor \
          AND v.status = 'pending' AND v.expires_at_ms > $6), NULL, NULL FROM q"
    };
}

/// The devices each operation's target registered for push (the push hand-off).
macro_rules! devices_of_q {
    () => {
        "SELECT q.op, 'device', d.platform, d.token, NULL, NULL, NULL, NULL, NULL, d.voip, NULL, NULL \
         FROM q JOIN push_devices d ON d.user_id = q.target"
    };
}

/// `$1` ops, `$2` actors, `$3` keys, `$4` targets, `$5` pair keys, `$6` now.
const REQUEST_DIRECT: &str = concat!(
    "WITH q AS (SELECT * FROM UNNEST($1::int[], $2::text[], $3::text[], $4::text[], $5::text[]) \
     AS q(op, actor, key, target, pair_key)) ",
    idempotency_of_q!(),
    " UNION ALL SELECT q.op, ",
    user_columns!(),
    " FROM q JOIN users u ON u.id IN (q.actor, q.target)",
    " UNION ALL SELECT q.op, ",
    request_columns!(),
    " FROM q JOIN videochat_requests v ON v.pair_key = q.pair_key AND v.kind = 'direct' AND v.status = 'pending'",
    " UNION ALL SELECT q.op, 'available', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, NULL, NULL FROM q \
     WHERE EXISTS (SELECT 1 FROM connections c JOIN gateways g ON g.id = c.gateway_id \
                   WHERE c.user_id = q.target AND g.lease_expires_at_ms > $6)",
    " UNION ALL ",
    outgoing_of_q!(),
    " UNION ALL ",
    devices_of_q!(),
);

/// `$1` ops, `$2` actors, `$3` keys, `$4` targets, `$5` videochats, `$6` now, `$7` how many
/// participants to show, `$8` since when invites count towards the invites-per-minute limit.
const INVITE: &str = concat!(
    "WITH q AS (SELECT * FROM UNNEST($1::int[], $2::text[], $3::text[], $4::text[], $5::text[]) \
     AS q(op, actor, key, target, videochat)) ",
    idempotency_of_q!(),
    " UNION ALL SELECT q.op, ",
    user_columns!(),
    " FROM q JOIN users u ON u.id IN (q.actor, q.target)",
    " UNION ALL SELECT q.op, ",
    videochat_columns!(),
    " FROM q JOIN videochats c ON c.id = q.videochat",
    " UNION ALL SELECT q.op, ",
    member_columns!(),
    " FROM q JOIN participants p ON p.videochat_id = q.videochat AND p.user_id IN (q.actor, q.target)",
    " UNION ALL SELECT q.op, 'participant', p.user_id, u.first_name, u.last_name, u.avatar, \
     u.avatar_3d, u.company_name, u.company_title, u.privacy_mode, p.uid, NULL \
     FROM q CROSS JOIN LATERAL (SELECT user_id, uid FROM participants WHERE videochat_id = q.videochat \
     AND left_at_ms IS NULL ORDER BY uid LIMIT $7) p LEFT JOIN users u ON u.id = p.user_id",
    " UNION ALL SELECT q.op, 'count', NULL, NULL, NULL, NULL, NULL, NULL, NULL, c.n, c.max_uid, NULL \
     FROM q CROSS JOIN LATERAL (SELECT COUNT(*) FILTER (WHERE left_at_ms IS NULL) AS n, MAX(uid) AS max_uid FROM participants \
     WHERE videochat_id = q.videochat) c",
    " UNION ALL SELECT q.op, ",
    request_columns!(),
    " FROM q JOIN videochat_requests v ON v.videochat_id = q.videochat AND v.target_id = q.target \
     AND v.kind = 'invite' AND v.status = 'pending'",
    " UNION ALL SELECT q.op, 'available', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, NULL, NULL FROM q \
     WHERE EXISTS (SELECT 1 FROM connections c JOIN gateways g ON g.id = c.gateway_id \
                   WHERE c.user_id = q.target AND g.lease_expires_at_ms > $6)",
    " UNION ALL ",
    outgoing_of_q!(),
    " UNION ALL SELECT q.op, 'invites', NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
     (SELECT COUNT(*) FROM videochat_requests v WHERE v.videochat_id = q.videochat \
      AND v.kind = 'invite' AND v.created_at_ms > $8), NULL, NULL FROM q",
    " UNION ALL ",
    devices_of_q!(),
);

/// `$1` ops, `$2` actors, `$3` keys, `$4` requests.
const ACCEPT: &str = concat!(
    "WITH q AS (SELECT * FROM UNNEST($1::int[], $2::text[], $3::text[], $4::text[]) \
     AS q(op, actor, key, request)), \
     r AS (SELECT q.op, q.actor, v.* FROM q JOIN videochat_requests v ON v.id = q.request) ",
    idempotency_of_q!(),
    " UNION ALL SELECT r.op, ",
    request_columns_of_r!(),
    " FROM r",
    " UNION ALL SELECT r.op, ",
    user_columns!(),
    " FROM r JOIN users u ON u.id IN (r.actor, r.initiator_id)",
    " UNION ALL SELECT r.op, ",
    videochat_columns!(),
    " FROM r JOIN videochats c ON c.id = r.videochat_id",
    " UNION ALL SELECT r.op, ",
    member_columns!(),
    " FROM r JOIN participants p ON p.videochat_id = r.videochat_id AND p.user_id = r.actor",
    " UNION ALL SELECT r.op, 'count', NULL, NULL, NULL, NULL, NULL, NULL, NULL, c.n, c.max_uid, NULL \
     FROM r CROSS JOIN LATERAL (SELECT COUNT(*) FILTER (WHERE left_at_ms IS NULL) AS n, MAX(uid) AS max_uid FROM participants \
     WHERE videochat_id = r.videochat_id) c WHERE r.videochat_id IS NOT NULL",
);

/// `$1` ops, `$2` actors, `$3` keys, `$4` requests.
const DECLINE: &str = concat!(
    "WITH q AS (SELECT * FROM UNNEST($1::int[], $2::text[], $3::text[], $4::text[]) \
     AS q(op, actor, key, request)) ",
    idempotency_of_q!(),
    " UNION ALL SELECT q.op, ",
    request_columns!(),
    " FROM q JOIN videochat_requests v ON v.id = q.request",
    " UNION ALL SELECT q.op, ",
    user_columns!(),
    " FROM q JOIN videochat_requests v ON v.id = q.request \
     JOIN users u ON u.id IN (v.initiator_id, v.target_id)",
);

/// `$1` ops, `$2` actors, `$3` keys, `$4` requests, `$5` videochats.
const MERGE: &str = concat!(
    "WITH q AS (SELECT * FROM UNNEST($1::int[], $2::text[], $3::text[], $4::text[], $5::text[]) \
     AS q(op, actor, key, request, videochat)), \
     r AS (SELECT q.op, q.actor, q.videochat AS into_videochat, v.* FROM q \
           JOIN videochat_requests v ON v.id = q.request) ",
    idempotency_of_q!(),
    " UNION ALL SELECT r.op, ",
    request_columns_of_r!(),
    " FROM r",
    " UNION ALL SELECT r.op, ",
    user_columns!(),
    " FROM r JOIN users u ON u.id IN (r.actor, r.initiator_id)",
    " UNION ALL SELECT q.op, ",
    videochat_columns!(),
    " FROM q JOIN videochats c ON c.id = q.videochat",
    " UNION ALL SELECT r.op, ",
    member_columns!(),
    " FROM r JOIN participants p ON p.videochat_id = r.into_videochat \
     AND p.user_id IN (r.actor, r.initiator_id)",
    " UNION ALL SELECT q.op, 'count', NULL, NULL, NULL, NULL, NULL, NULL, NULL, c.n, c.max_uid, NULL \
     FROM q CROSS JOIN LATERAL (SELECT COUNT(*) FILTER (WHERE left_at_ms IS NULL) AS n, MAX(uid) AS max_uid FROM participants \
     WHERE videochat_id = q.videochat) c",
);

/// The kind of a command, for grouping a batch.
fn kind(command: &Command) -> u8 {
    match command {
        Command::RequestDirect { .. } => 0,
        Command::Invite { .. } => 1,
        Command::Accept { .. } => 2,
        Command::Decline { .. } => 3,
        Command::Merge { .. } => 4,
    }
}

/// Runs batches of loads on the pool.
pub(in crate::store) struct Loads {
    pub pool: PgPool,
}

impl Run<LoadJob, Facts> for Loads {
    fn run<'a>(
        &'a self,
        jobs: &'a [LoadJob],
    ) -> Pin<Box<dyn Future<Output = Vec<StoreResult<Facts>>> + Send + 'a>> {
        Box::pin(async move {
            let mut results: Vec<Option<StoreResult<Facts>>> = jobs.iter().map(|_| None).collect();
            let groups: Vec<Vec<usize>> = (0..5u8)
                .map(|group| {
                    (0..jobs.len())
                        .filter(|&i| kind(&jobs[i].command) == group)
                        .collect::<Vec<usize>>()
                })
                .filter(|ops| !ops.is_empty())
                .collect();
            // Each kind is a statement of its own, on a connection of its own, all at once: a
            // batch waits for the slowest, not for their sum.
            let loaded =
                futures_util::future::join_all(groups.iter().map(|ops| self.load_kind(jobs, ops)))
                    .await;
            for (ops, loaded) in groups.into_iter().zip(loaded) {
                match loaded {
                    Ok(mut facts) => {
                        for i in ops {
                            results[i] =
                                Some(facts.remove(&i).unwrap_or_else(|| Ok(Facts::default())));
                        }
                    }
                    Err(error) => {
                        for i in ops {
                            results[i] = Some(Err(error.for_another()));
                        }
                    }
                }
            }
            results
                .into_iter()
                .map(|r| r.unwrap_or(Ok(Facts::default())))
                .collect()
        })
    }
}

/// Prepares and plans every kind's statement on `connection` by running each over no
/// operations (see `apply::warm` for why).
pub(super) async fn warm(connection: &mut PgConnection) -> StoreResult<()> {
    let (Ok(user), Ok(videochat), Ok(request)) = (
        UserId::parse("warm-up"),
        VideochatId::parse("warm-up"),
        RequestId::parse("warm-up"),
    ) else {
        return Ok(());
    };
    let kinds = Command::one_of_each(user, videochat, request);
    for command in &kinds {
        query(command, &[], &[]).fetch_all(&mut *connection).await?;
    }
    Ok(())
}

impl Loads {
    /// The facts of the operations `ops` (indexes into `jobs`, all of one kind).
    async fn load_kind(
        &self,
        jobs: &[LoadJob],
        ops: &[usize],
    ) -> StoreResult<HashMap<usize, StoreResult<Facts>>> {
        let rows = query(&jobs[ops[0]].command, jobs, ops)
            .fetch_all(&self.pool)
            .await?;
        let mut per_op: HashMap<usize, Vec<FactRow>> = HashMap::new();
        for (op, fact, a, b, c, d, e, f, g, n1, n2, blob) in rows {
            per_op
                .entry(usize::try_from(op).unwrap_or(usize::MAX))
                .or_default()
                .push((fact, a, b, c, d, e, f, g, n1, n2, blob));
        }
        Ok(ops
            .iter()
            .map(|&i| {
                let rows = per_op.remove(&i).unwrap_or_default();
                (
                    i,
                    facts_from_rows(rows, Some((&jobs[i].actor, &jobs[i].key))),
                )
            })
            .collect())
    }
}

/// The statement of the operations `ops` (indexes into `jobs`, all of `first`'s kind), its
/// arguments bound.
fn query<'q>(
    first: &Command,
    jobs: &'q [LoadJob],
    ops: &[usize],
) -> QueryAs<'q, Postgres, OpFactRow, PgArguments> {
    let index: Vec<i32> = ops.iter().map(|&i| i as i32).collect();
    let actors: Vec<&str> = ops.iter().map(|&i| jobs[i].actor.as_str()).collect();
    let keys: Vec<&str> = ops.iter().map(|&i| jobs[i].key.as_str()).collect();
    let now = ops
        .iter()
        .map(|&i| jobs[i].now_ms)
        .max()
        .unwrap_or_default();
    let column = |f: fn(&Command) -> Option<String>| -> Vec<String> {
        ops.iter()
            .map(|&i| f(&jobs[i].command).unwrap_or_default())
            .collect()
    };
    let query = sqlx::query_as::<_, OpFactRow>(match first {
        Command::RequestDirect { .. } => REQUEST_DIRECT,
        Command::Invite { .. } => INVITE,
        Command::Accept { .. } => ACCEPT,
        Command::Decline { .. } => DECLINE,
        Command::Merge { .. } => MERGE,
    })
    .bind(index)
    .bind(actors)
    .bind(keys);
    match first {
        Command::RequestDirect { .. } => query
            .bind(column(|c| match c {
                Command::RequestDirect { target, .. } => Some(target.to_string()),
                _ => None,
            }))
            .bind(
                ops.iter()
                    .map(|&i| match &jobs[i].command {
                        Command::RequestDirect { target, .. } => {
                            VideochatRequest::pair_key(&jobs[i].actor, target)
                        }
                        _ => String::new(),
                    })
                    .collect::<Vec<_>>(),
            )
            .bind(now),
        Command::Invite { .. } => query
            .bind(column(|c| match c {
                Command::Invite { target, .. } => Some(target.to_string()),
                _ => None,
            }))
            .bind(column(|c| match c {
                Command::Invite { videochat, .. } => Some(videochat.to_string()),
                _ => None,
            }))
            .bind(now)
            .bind(MAX_RING_PARTICIPANTS)
            .bind(now - INVITE_WINDOW_MS),
        Command::Accept { .. } | Command::Decline { .. } => query.bind(column(|c| match c {
            Command::Accept { request } | Command::Decline { request } => Some(request.to_string()),
            _ => None,
        })),
        Command::Merge { .. } => query
            .bind(column(|c| match c {
                Command::Merge { request, .. } => Some(request.to_string()),
                _ => None,
            }))
            .bind(column(|c| match c {
                Command::Merge { videochat, .. } => Some(videochat.to_string()),
                _ => None,
            })),
    }
}
