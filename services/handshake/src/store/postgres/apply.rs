//! The writes of many operations in one statement, each with its own guard.
//!
//! Every row carries the index of its operation. `fin` moves rings out of pending; `ok` lists
//! the operations whose ring moved (or that had none to move); every insert keeps only rows of
//! operations in `ok`. So an operation whose ring was answered meanwhile writes nothing while
//! the others of its batch go through. Mailboxes move once per recipient for the whole batch,
//! their rows locked in recipient order; a recipient's events take positions in operation order.
//!
//! Why arrays where a join would read better (`ok` is an array of operations, `last` the
//! mailboxes' new positions as two arrays): the session rules out hash and merge joins (see
//! `postgres/mod.rs`), so a join between two of these CTEs is a nested loop, every row of one
//! against every row of the other — 2,400 comparisons for a batch of 49 events, and a
//! semi-join of each insert against `ok`, all growing with the square of the batch. An array
//! lookup does the same in a tight loop, and a filter `op = ANY(ok)` is evaluated once per row.
//!
//! A unique violation (two operations racing for one key, in this batch or against another)
//! aborts the statement: the batch then runs again one operation at a time, so only the
//! operation that lost reports the conflict.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::PgPool;

use super::Announce;
use super::batch::Run;
use crate::change::{IdempotencyRecord, RecordedOutcome};
use crate::domain::VideochatRequest;
use crate::store::webhooks::encode_devices;
use crate::store::{StoreError, StoreResult};

/// One operation's write.
pub(in crate::store) type ApplyJob = crate::store::OwnedWrite;

/// The statement's CTEs but the webhooks' (below).
macro_rules! apply_ctes {
    () => {
        "WITH
fin AS (
    UPDATE videochat_requests r SET status = f.status, answered_at_ms = f.now,
        videochat_id = COALESCE(f.videochat, r.videochat_id)
    FROM UNNEST($2::int[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $45::text[])
        AS f(op, id, status, at, now, videochat)
    WHERE r.id = f.id AND r.status = 'pending' AND (f.at IS NULL OR r.expires_at_ms > f.at)
    RETURNING f.op),
ok AS (
    SELECT array_agg(o.op) AS ops FROM UNNEST($1::int[]) AS o(op)
    WHERE o.op IN (SELECT op FROM fin) OR NOT (o.op = ANY($2::int[]))),
new_request AS (
    INSERT INTO videochat_requests (id, kind, initiator_id, target_id, videochat_id, engine, status, pair_key, created_at_ms, expires_at_ms, push_handoff_at_ms, push_devices)
    SELECT r.id, r.kind, r.initiator, r.target, r.videochat, r.engine, 'pending', r.pair_key, r.created, r.expires, r.pushed, r.devices
    FROM UNNEST($7::int[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::bigint[], $16::bigint[], $44::bigint[], $49::bytea[])
        AS r(op, id, kind, initiator, target, videochat, engine, pair_key, created, expires, pushed, devices)
    WHERE r.op = ANY((SELECT ops FROM ok)::int[])),
new_videochat AS (
    INSERT INTO videochats (id, mode, engine, room, shared_secret, created_at_ms)
    SELECT v.id, v.mode, v.engine, v.room, v.secret, v.now
    FROM UNNEST($17::int[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::bigint[])
        AS v(op, id, mode, engine, room, secret, now)
    WHERE v.op = ANY((SELECT ops FROM ok)::int[])),
new_participants AS (
    INSERT INTO participants (videochat_id, user_id, uid, permissions, joined_at_ms)
    SELECT p.videochat, p.user_id, p.uid, p.permissions, p.now
    FROM UNNEST($24::int[], $25::text[], $26::text[], $27::bigint[], $28::bigint[], $29::bigint[])
        AS p(op, videochat, user_id, uid, permissions, now)
    WHERE p.op = ANY((SELECT ops FROM ok)::int[])),
rejoined AS (
    UPDATE participants p SET left_at_ms = NULL
    FROM UNNEST($46::int[], $47::text[], $48::text[]) AS j(op, videochat, user_id)
    WHERE p.videochat_id = j.videochat AND p.user_id = j.user_id AND j.op = ANY((SELECT ops FROM ok)::int[])),
events AS (
    SELECT e.*,
           ROW_NUMBER() OVER (PARTITION BY e.recipient ORDER BY e.op, e.idx) AS k,
           COUNT(*) OVER (PARTITION BY e.recipient) AS n
    FROM UNNEST($30::int[], $31::int[], $32::text[], $33::text[], $34::bytea[], $35::text[], $36::bigint[])
        AS e(op, idx, recipient, kind, payload, traceparent, now)
    WHERE e.op = ANY((SELECT ops FROM ok)::int[])),
mailbox AS (
    INSERT INTO mailboxes AS m (user_id, last_seq)
    SELECT recipient, MAX(n) FROM events GROUP BY recipient ORDER BY recipient
    ON CONFLICT (user_id) DO UPDATE SET last_seq = m.last_seq + excluded.last_seq
    RETURNING user_id, last_seq),
last AS (
    SELECT array_agg(user_id) AS users, array_agg(last_seq) AS seqs FROM mailbox),
stored AS (
    INSERT INTO outbox_events (recipient_user_id, seq, kind, payload, traceparent, created_at_ms, origin)
    SELECT e.recipient, l.seqs[array_position(l.users, e.recipient)] - e.n + e.k, e.kind, e.payload, e.traceparent, e.now, $43
    FROM events e, last l),
record AS (
    INSERT INTO idempotency_records (user_id, key, operation, reply, created_at_ms)
    SELECT i.user_id, i.key, i.operation, i.reply, i.now
    FROM UNNEST($37::int[], $38::text[], $39::text[], $40::text[], $41::bytea[], $42::bigint[])
        AS i(op, user_id, key, operation, reply, now)
    WHERE i.op = ANY((SELECT ops FROM ok)::int[]))"
    };
}

/// What the statement returns: the operations whose guard held, and their events' positions.
macro_rules! apply_result {
    () => {
        "
SELECT unnest(o.ops), -1, 0::bigint FROM ok o
UNION ALL
SELECT e.op, e.idx::int, l.seqs[array_position(l.users, e.recipient)] - e.n + e.k FROM events e, last l"
    };
}

/// Webhook deliveries of the batch (docs/webhooks.md), kept like every insert only for the
/// operations in `ok`.
macro_rules! webhooks_cte {
    () => {
        ",
webhooks AS (
    INSERT INTO webhook_deliveries (id, endpoint, event_type, payload, created_at_ms, next_attempt_at_ms, attempts, status, traceparent)
    SELECT w.id, w.endpoint, w.event_type, w.payload, w.now, w.next, w.attempts, 'pending', w.traceparent
    FROM UNNEST($50::int[], $51::text[], $52::text[], $53::text[], $54::text[], $55::text[], $56::bigint[], $57::bigint[], $58::bigint[])
        AS w(op, id, endpoint, event_type, payload, traceparent, now, next, attempts)
    WHERE w.op = ANY((SELECT ops FROM ok)::int[]))"
    };
}

const APPLY: &str = concat!(apply_ctes!(), apply_result!());
/// The same with the webhook deliveries' insert: used only by batches that have some, so a
/// deployment without webhooks pays nothing for them.
const APPLY_WITH_WEBHOOKS: &str = concat!(apply_ctes!(), webhooks_cte!(), apply_result!());

/// Runs batches of writes on the pool.
pub(in crate::store) struct Applies {
    pub pool: PgPool,
    pub origin: String,
    pub announce: Arc<Announce>,
}

impl Run<ApplyJob, Vec<u64>> for Applies {
    fn run<'a>(
        &'a self,
        jobs: &'a [ApplyJob],
    ) -> Pin<Box<dyn Future<Output = Vec<StoreResult<Vec<u64>>>> + Send + 'a>> {
        Box::pin(async move {
            let results = match self.write(jobs).await {
                Ok(results) => results,
                Err(StoreError::Conflict) if jobs.len() > 1 => {
                    metrics::counter!("videochat_store_batch_retried_alone_total").increment(1);
                    let mut results = Vec::with_capacity(jobs.len());
                    for job in jobs {
                        let result = self
                            .write(std::slice::from_ref(job))
                            .await
                            .and_then(|mut one| one.pop().unwrap_or(Err(StoreError::Conflict)));
                        results.push(result);
                    }
                    results
                }
                Err(error) => jobs.iter().map(|_| Err(error.for_another())).collect(),
            };
            if results
                .iter()
                .any(|r| r.as_ref().is_ok_and(|seqs| !seqs.is_empty()))
            {
                self.announce.commit_with_events();
            }
            results
        })
    }
}

/// Column arrays of one batch, bound in the statement's order.
#[derive(Default)]
struct Columns<'a> {
    ops: Vec<i32>,
    f_op: Vec<i32>,
    f_id: Vec<&'a str>,
    f_status: Vec<&'a str>,
    f_at: Vec<Option<i64>>,
    f_now: Vec<i64>,
    f_videochat: Vec<Option<&'a str>>,
    r_op: Vec<i32>,
    r_id: Vec<&'a str>,
    r_kind: Vec<&'a str>,
    r_initiator: Vec<&'a str>,
    r_target: Vec<&'a str>,
    r_videochat: Vec<Option<&'a str>>,
    r_engine: Vec<&'a str>,
    r_pair: Vec<String>,
    r_created: Vec<i64>,
    r_expires: Vec<i64>,
    r_pushed: Vec<Option<i64>>,
    r_devices: Vec<Option<Vec<u8>>>,
    v_op: Vec<i32>,
    v_id: Vec<&'a str>,
    v_mode: Vec<&'a str>,
    v_engine: Vec<&'a str>,
    v_room: Vec<&'a str>,
    v_secret: Vec<&'a str>,
    v_now: Vec<i64>,
    p_op: Vec<i32>,
    p_videochat: Vec<&'a str>,
    p_user: Vec<&'a str>,
    p_uid: Vec<i64>,
    p_permissions: Vec<i64>,
    p_now: Vec<i64>,
    j_op: Vec<i32>,
    j_videochat: Vec<&'a str>,
    j_user: Vec<&'a str>,
    e_op: Vec<i32>,
    e_idx: Vec<i32>,
    e_recipient: Vec<&'a str>,
    e_kind: Vec<&'a str>,
    e_payload: Vec<&'a [u8]>,
    e_traceparent: Vec<&'a str>,
    e_now: Vec<i64>,
    i_op: Vec<i32>,
    i_user: Vec<&'a str>,
    i_key: Vec<&'a str>,
    i_operation: Vec<&'a str>,
    i_reply: Vec<&'a [u8]>,
    i_now: Vec<i64>,
    w: WebhookColumns<'a>,
}

/// Column arrays of the batch's webhook deliveries.
#[derive(Default)]
struct WebhookColumns<'a> {
    op: Vec<i32>,
    id: Vec<&'a str>,
    endpoint: Vec<&'a str>,
    event_type: Vec<&'a str>,
    payload: Vec<&'a str>,
    traceparent: Vec<&'a str>,
    now: Vec<i64>,
    next: Vec<i64>,
    attempts: Vec<i64>,
}

impl<'a> WebhookColumns<'a> {
    fn add(&mut self, op: i32, job: &'a ApplyJob) {
        for d in &job.outbound.deliveries {
            self.op.push(op);
            self.id.push(d.id.as_str());
            self.endpoint.push(d.endpoint.as_str());
            self.event_type.push(d.event_type);
            self.payload.push(d.payload.as_str());
            self.traceparent.push(job.traceparent.as_str());
            self.now.push(job.now_ms);
            self.next.push(d.leased_until_ms.unwrap_or(job.now_ms));
            self.attempts.push(i64::from(d.leased_until_ms.is_some()));
        }
    }
}

impl<'a> Columns<'a> {
    fn add(&mut self, op: i32, job: &'a ApplyJob) {
        let change = &job.change;
        let now = job.now_ms;
        self.ops.push(op);
        if let Some(finish) = &change.finish {
            self.f_op.push(op);
            self.f_id.push(finish.request.as_str());
            self.f_status.push(finish.status.as_str());
            self.f_at.push(finish.ringing_at);
            self.f_now.push(now);
            self.f_videochat
                .push(finish.videochat.as_ref().map(|v| v.as_str()));
        }
        if let Some(r) = &change.new_request {
            self.r_op.push(op);
            self.r_id.push(r.id.as_str());
            self.r_kind.push(r.kind.as_str());
            self.r_initiator.push(r.initiator.as_str());
            self.r_target.push(r.target.as_str());
            self.r_videochat
                .push(r.videochat_id.as_ref().map(|v| v.as_str()));
            self.r_engine.push(r.engine.as_str());
            self.r_pair
                .push(VideochatRequest::pair_key(&r.initiator, &r.target));
            self.r_created.push(r.created_at_ms);
            self.r_expires.push(r.expires_at_ms);
            self.r_pushed
                .push(job.outbound.push_handoff.as_ref().map(|_| job.now_ms));
            self.r_devices
                .push(job.outbound.push_handoff.as_deref().map(encode_devices));
        }
        if let Some(v) = &change.new_videochat {
            self.v_op.push(op);
            self.v_id.push(v.id.as_str());
            self.v_mode.push(v.mode.as_str());
            self.v_engine.push(v.engine.as_str());
            self.v_room.push(v.room.as_str());
            self.v_secret.push(v.shared_secret.as_str());
            self.v_now.push(now);
        }
        for p in &change.new_participants {
            self.p_op.push(op);
            self.p_videochat.push(p.videochat_id.as_str());
            self.p_user.push(p.user_id.as_str());
            self.p_uid.push(i64::from(p.uid));
            self.p_permissions.push(p.permissions.to_bits());
            self.p_now.push(now);
        }
        for p in &change.rejoined {
            self.j_op.push(op);
            self.j_videochat.push(p.videochat_id.as_str());
            self.j_user.push(p.user_id.as_str());
        }
        for (idx, event) in job.events.iter().enumerate() {
            self.e_op.push(op);
            self.e_idx.push(i32::try_from(idx).unwrap_or(i32::MAX));
            self.e_recipient.push(event.recipient.as_str());
            self.e_kind.push(event.kind);
            self.e_payload.push(event.payload.as_slice());
            self.e_traceparent.push(job.traceparent.as_str());
            self.e_now.push(now);
        }
        if let Some(IdempotencyRecord {
            user_id,
            key,
            operation,
            outcome: RecordedOutcome::Reply(reply),
            ..
        }) = &job.record
        {
            self.i_op.push(op);
            self.i_user.push(user_id.as_str());
            self.i_key.push(key.as_str());
            self.i_operation.push(operation.as_str());
            self.i_reply.push(reply.as_slice());
            self.i_now.push(now);
        }
        self.w.add(op, job);
    }
}

impl Applies {
    /// Writes `jobs` in one statement; per job, the positions of its events or `Stale`.
    async fn write(&self, jobs: &[ApplyJob]) -> StoreResult<Vec<StoreResult<Vec<u64>>>> {
        let mut c = Columns::default();
        for (op, job) in jobs.iter().enumerate() {
            c.add(i32::try_from(op).unwrap_or(i32::MAX), job);
        }
        let with_webhooks = !c.w.op.is_empty();
        let query = sqlx::query_as(if with_webhooks {
            APPLY_WITH_WEBHOOKS
        } else {
            APPLY
        })
        .bind(&c.ops)
        .bind(&c.f_op)
        .bind(&c.f_id)
        .bind(&c.f_status)
        .bind(&c.f_at)
        .bind(&c.f_now)
        .bind(&c.r_op)
        .bind(&c.r_id)
        .bind(&c.r_kind)
        .bind(&c.r_initiator)
        .bind(&c.r_target)
        .bind(&c.r_videochat)
        .bind(&c.r_engine)
        .bind(&c.r_pair)
        .bind(&c.r_created)
        .bind(&c.r_expires)
        .bind(&c.v_op)
        .bind(&c.v_id)
        .bind(&c.v_mode)
        .bind(&c.v_engine)
        .bind(&c.v_room)
        .bind(&c.v_secret)
        .bind(&c.v_now)
        .bind(&c.p_op)
        .bind(&c.p_videochat)
        .bind(&c.p_user)
        .bind(&c.p_uid)
        .bind(&c.p_permissions)
        .bind(&c.p_now)
        .bind(&c.e_op)
        .bind(&c.e_idx)
        .bind(&c.e_recipient)
        .bind(&c.e_kind)
        .bind(&c.e_payload)
        .bind(&c.e_traceparent)
        .bind(&c.e_now)
        .bind(&c.i_op)
        .bind(&c.i_user)
        .bind(&c.i_key)
        .bind(&c.i_operation)
        .bind(&c.i_reply)
        .bind(&c.i_now)
        .bind(&self.origin)
        .bind(&c.r_pushed)
        .bind(&c.f_videochat)
        .bind(&c.j_op)
        .bind(&c.j_videochat)
        .bind(&c.j_user)
        .bind(&c.r_devices);
        let query = if with_webhooks {
            query
                .bind(&c.w.op)
                .bind(&c.w.id)
                .bind(&c.w.endpoint)
                .bind(&c.w.event_type)
                .bind(&c.w.payload)
                .bind(&c.w.traceparent)
                .bind(&c.w.now)
                .bind(&c.w.next)
                .bind(&c.w.attempts)
        } else {
            query
        };
        let rows: Vec<(i32, i32, i64)> = query.fetch_all(&self.pool).await?;
        let mut ok = vec![false; jobs.len()];
        let mut positions: Vec<Vec<u64>> = jobs.iter().map(|j| vec![0; j.events.len()]).collect();
        for (op, idx, seq) in rows {
            let Some(op) = usize::try_from(op).ok().filter(|op| *op < jobs.len()) else {
                continue;
            };
            match usize::try_from(idx) {
                Err(_) => ok[op] = true,
                Ok(idx) => {
                    if let Some(slot) = positions[op].get_mut(idx) {
                        *slot = u64::try_from(seq).unwrap_or_default();
                    }
                }
            }
        }
        Ok(ok
            .into_iter()
            .zip(positions)
            .map(|(ok, positions)| {
                if ok {
                    Ok(positions)
                } else {
                    Err(StoreError::Stale)
                }
            })
            .collect())
    }
}
