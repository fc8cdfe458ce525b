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

use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgConnection, PgPool, Postgres};

use super::announce::Announce;
use super::batch::Run;
use crate::change::{IdempotencyRecord, RecordedOutcome};
use crate::domain::VideochatRequest;
use crate::store::webhooks::encode_devices;
use crate::store::{Applied, GroupRef, StoreError, StoreResult};

/// One operation's write.
pub(in crate::store) type ApplyJob = crate::store::OwnedWrite;

/// One batch's write as a statement: its SQL, made of only the parts the batch needs, and its
/// arguments, numbered as they are bound.
///
/// Why composed rather than one text for every batch: a statement pays for every table and
/// index it names (locks, opening, executor start-up) and every CTE it has, rows or not. A
/// batch of rings alone named the tables of accepts, merges and webhooks too; measured with
/// `EXECUTE` of one ring at a time on this machine's Postgres, the whole statement took
/// 1.15 ms and the ring's own parts 0.62 ms. The shapes that occur are few (rings, answers,
/// both, with or without webhooks…), and each text is prepared once per connection.
struct Statement {
    sql: String,
    args: PgArguments,
    /// The CTEs, in order (each may use those before it).
    ctes: Vec<String>,
}

impl Statement {
    fn new() -> Self {
        Self {
            sql: String::new(),
            args: PgArguments::default(),
            ctes: Vec::new(),
        }
    }

    /// Binds `value` as the next argument; returns its placeholder.
    fn bind<'t, T>(&mut self, value: T) -> StoreResult<String>
    where
        T: sqlx::Encode<'t, Postgres> + sqlx::Type<Postgres>,
    {
        self.args
            .add(value)
            .map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))?;
        Ok(format!("${}", self.args.len()))
    }

    fn cte(&mut self, text: String) {
        self.ctes.push(text);
    }

    /// The statement for `c` with the parts of `shape` (normally [`Shape::of`] `c`: every part
    /// its rows need), guarded by `ok` when rings are finished; its webhooks are written as the
    /// group `group_id`.
    fn compose(c: &Columns<'_>, shape: Shape, origin: &str, group_id: &str) -> StoreResult<Self> {
        let mut s = Self::new();
        let ops = s.bind(&c.ops)?;
        // Operations that finish a ring go through only if the ring was still pending: `ok`
        // holds those and every operation that finishes none. Without finishes, all go through.
        let guarded = shape.finish;
        let kept = |alias: &str| {
            if guarded {
                format!("{alias}.op = ANY((SELECT ops FROM ok)::int[])")
            } else {
                "TRUE".to_owned()
            }
        };
        if guarded {
            let f = [
                s.bind(&c.f_op)?,
                s.bind(&c.f_id)?,
                s.bind(&c.f_status)?,
                s.bind(&c.f_at)?,
                s.bind(&c.f_now)?,
                s.bind(&c.f_videochat)?,
            ];
            s.cte(format!(
                "fin AS (
    UPDATE videochat_requests r SET status = f.status, answered_at_ms = f.now,
        videochat_id = COALESCE(f.videochat, r.videochat_id)
    FROM UNNEST({}::int[], {}::text[], {}::text[], {}::bigint[], {}::bigint[], {}::text[])
        AS f(op, id, status, at, now, videochat)
    WHERE r.id = f.id AND r.status = 'pending' AND (f.at IS NULL OR r.expires_at_ms > f.at)
    RETURNING f.op)",
                f[0], f[1], f[2], f[3], f[4], f[5]
            ));
            s.cte(format!(
                "ok AS (
    SELECT array_agg(o.op) AS ops FROM UNNEST({ops}::int[]) AS o(op)
    WHERE o.op IN (SELECT op FROM fin) OR NOT (o.op = ANY({}::int[])))",
                f[0]
            ));
        }
        if shape.ring {
            let r = [
                s.bind(&c.r_op)?,
                s.bind(&c.r_id)?,
                s.bind(&c.r_kind)?,
                s.bind(&c.r_initiator)?,
                s.bind(&c.r_target)?,
                s.bind(&c.r_videochat)?,
                s.bind(&c.r_engine)?,
                s.bind(&c.r_pair)?,
                s.bind(&c.r_created)?,
                s.bind(&c.r_expires)?,
                s.bind(&c.r_pushed)?,
                s.bind(&c.r_devices)?,
            ];
            s.cte(format!(
                "new_request AS (
    INSERT INTO videochat_requests (id, kind, initiator_id, target_id, videochat_id, engine, status, pair_key, created_at_ms, expires_at_ms, push_handoff_at_ms, push_devices)
    SELECT r.id, r.kind, r.initiator, r.target, r.videochat, r.engine, 'pending', r.pair_key, r.created, r.expires, r.pushed, r.devices
    FROM UNNEST({}::int[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::bigint[], {}::bigint[], {}::bigint[], {}::bytea[])
        AS r(op, id, kind, initiator, target, videochat, engine, pair_key, created, expires, pushed, devices)
    WHERE {})",
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
                kept("r")
            ));
        }
        if shape.videochat {
            let v = [
                s.bind(&c.v_op)?,
                s.bind(&c.v_id)?,
                s.bind(&c.v_mode)?,
                s.bind(&c.v_engine)?,
                s.bind(&c.v_room)?,
                s.bind(&c.v_secret)?,
                s.bind(&c.v_now)?,
            ];
            s.cte(format!(
                "new_videochat AS (
    INSERT INTO videochats (id, mode, engine, room, shared_secret, created_at_ms)
    SELECT v.id, v.mode, v.engine, v.room, v.secret, v.now
    FROM UNNEST({}::int[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::bigint[])
        AS v(op, id, mode, engine, room, secret, now)
    WHERE {})",
                v[0],
                v[1],
                v[2],
                v[3],
                v[4],
                v[5],
                v[6],
                kept("v")
            ));
        }
        if shape.participants {
            let p = [
                s.bind(&c.p_op)?,
                s.bind(&c.p_videochat)?,
                s.bind(&c.p_user)?,
                s.bind(&c.p_uid)?,
                s.bind(&c.p_permissions)?,
                s.bind(&c.p_now)?,
            ];
            s.cte(format!(
                "new_participants AS (
    INSERT INTO participants (videochat_id, user_id, uid, permissions, joined_at_ms)
    SELECT p.videochat, p.user_id, p.uid, p.permissions, p.now
    FROM UNNEST({}::int[], {}::text[], {}::text[], {}::bigint[], {}::bigint[], {}::bigint[])
        AS p(op, videochat, user_id, uid, permissions, now)
    WHERE {})",
                p[0],
                p[1],
                p[2],
                p[3],
                p[4],
                p[5],
                kept("p")
            ));
        }
        if shape.rejoin {
            let j = [
                s.bind(&c.j_op)?,
                s.bind(&c.j_videochat)?,
                s.bind(&c.j_user)?,
            ];
            s.cte(format!(
                "rejoined AS (
    UPDATE participants p SET left_at_ms = NULL
    FROM UNNEST({}::int[], {}::text[], {}::text[]) AS j(op, videochat, user_id)
    WHERE p.videochat_id = j.videochat AND p.user_id = j.user_id AND {})",
                j[0],
                j[1],
                j[2],
                kept("j")
            ));
        }
        let with_events = shape.events;
        if with_events {
            let e = [
                s.bind(&c.e_op)?,
                s.bind(&c.e_idx)?,
                s.bind(&c.e_recipient)?,
                s.bind(&c.e_kind)?,
                s.bind(&c.e_payload)?,
                s.bind(&c.e_traceparent)?,
                s.bind(&c.e_now)?,
            ];
            let origin = s.bind(origin)?;
            s.cte(format!(
                "events AS (
    SELECT e.*,
           ROW_NUMBER() OVER (PARTITION BY e.recipient ORDER BY e.op, e.idx) AS k,
           COUNT(*) OVER (PARTITION BY e.recipient) AS n
    FROM UNNEST({}::int[], {}::int[], {}::text[], {}::text[], {}::bytea[], {}::text[], {}::bigint[])
        AS e(op, idx, recipient, kind, payload, traceparent, now)
    WHERE {})",
                e[0],
                e[1],
                e[2],
                e[3],
                e[4],
                e[5],
                e[6],
                kept("e")
            ));
            s.cte(
                "mailbox AS (
    INSERT INTO mailboxes AS m (user_id, last_seq)
    SELECT recipient, MAX(n) FROM events GROUP BY recipient ORDER BY recipient
    ON CONFLICT (user_id) DO UPDATE SET last_seq = m.last_seq + excluded.last_seq
    RETURNING user_id, last_seq)"
                    .to_owned(),
            );
            s.cte(
                "last AS (
    SELECT array_agg(user_id) AS users, array_agg(last_seq) AS seqs FROM mailbox)"
                    .to_owned(),
            );
            s.cte(format!(
                "stored AS (
    INSERT INTO outbox_events (recipient_user_id, seq, kind, payload, traceparent, created_at_ms, origin)
    SELECT e.recipient, l.seqs[array_position(l.users, e.recipient)] - e.n + e.k, e.kind, e.payload, e.traceparent, e.now, {origin}
    FROM events e, last l)"
            ));
        }
        if shape.record {
            let i = [
                s.bind(&c.i_op)?,
                s.bind(&c.i_user)?,
                s.bind(&c.i_key)?,
                s.bind(&c.i_operation)?,
                s.bind(&c.i_reply)?,
                s.bind(&c.i_now)?,
            ];
            s.cte(format!(
                "record AS (
    INSERT INTO idempotency_records (user_id, key, operation, reply, created_at_ms)
    SELECT i.user_id, i.key, i.operation, i.reply, i.now
    FROM UNNEST({}::int[], {}::text[], {}::text[], {}::text[], {}::bytea[], {}::bigint[])
        AS i(op, user_id, key, operation, reply, now)
    WHERE {})",
                i[0],
                i[1],
                i[2],
                i[3],
                i[4],
                i[5],
                kept("i")
            ));
        }
        if shape.webhooks {
            let group = s.bind(group_id)?;
            let lease = s.bind(c.w.lease())?;
            let w = [
                s.bind(&c.w.op)?,
                s.bind(&c.w.id)?,
                s.bind(&c.w.endpoint)?,
                s.bind(&c.w.event_type)?,
                s.bind(&c.w.payload)?,
                s.bind(&c.w.traceparent)?,
                s.bind(&c.w.now)?,
            ];
            // Webhook deliveries (docs/webhooks.md): the batch's, of the operations kept, as one
            // group (`store/webhooks.rs`, `GroupRef`), none if no operation that has any is kept.
            // The arrays line up without an ORDER BY each: one aggregation pass feeds every
            // aggregate the same rows in the same order (an ORDER BY would sort each apart).
            s.cte(format!(
                "webhooks AS (
    INSERT INTO webhook_groups (id, leased_until_ms, ids, endpoints, event_types, payloads, traceparents, created_at_ms)
    SELECT {group}::text, {lease}::bigint, array_agg(w.id), array_agg(w.endpoint), array_agg(w.event_type),
        array_agg(w.payload), array_agg(w.traceparent), array_agg(w.now)
    FROM UNNEST({}::int[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::bigint[])
        AS w(op, id, endpoint, event_type, payload, traceparent, now)
    WHERE {}
    HAVING count(*) > 0)",
                w[0], w[1], w[2], w[3], w[4], w[5], w[6],
                kept("w")
            ));
        }
        // What the statement returns: the operations whose guard held (position -1), then each
        // event's position in its recipient's mailbox.
        if !s.ctes.is_empty() {
            s.sql = format!("WITH\n{}\n", s.ctes.join(",\n"));
        }
        if guarded {
            s.sql
                .push_str("SELECT unnest(o.ops), -1, 0::bigint FROM ok o");
        } else {
            s.sql
                .push_str(&format!("SELECT unnest({ops}::int[]), -1, 0::bigint"));
        }
        if with_events {
            s.sql.push_str(
                "\nUNION ALL\nSELECT e.op, e.idx::int, l.seqs[array_position(l.users, e.recipient)] - e.n + e.k FROM events e, last l",
            );
        }
        Ok(s)
    }
}

/// The parts a batch's statement has; each shape is its own text, prepared and planned once per
/// connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Shape {
    finish: bool,
    ring: bool,
    videochat: bool,
    participants: bool,
    rejoin: bool,
    events: bool,
    record: bool,
    webhooks: bool,
}

impl Shape {
    /// A direct ring or an invite.
    const RING: Shape = Shape {
        ring: true,
        events: true,
        record: true,
        ..Shape::NONE
    };
    /// An accept that starts a videochat.
    const ACCEPT: Shape = Shape {
        finish: true,
        videochat: true,
        participants: true,
        events: true,
        record: true,
        ..Shape::NONE
    };
    /// A decline or a cancel.
    const DECLINE: Shape = Shape {
        finish: true,
        events: true,
        record: true,
        ..Shape::NONE
    };
    const NONE: Shape = Shape {
        finish: false,
        ring: false,
        videochat: false,
        participants: false,
        rejoin: false,
        events: false,
        record: false,
        webhooks: false,
    };

    /// The parts `c`'s rows need.
    fn of(c: &Columns<'_>) -> Self {
        Self {
            finish: !c.f_op.is_empty(),
            ring: !c.r_op.is_empty(),
            videochat: !c.v_op.is_empty(),
            participants: !c.p_op.is_empty(),
            rejoin: !c.j_op.is_empty(),
            events: !c.e_op.is_empty(),
            record: !c.i_op.is_empty(),
            webhooks: !c.w.op.is_empty(),
        }
    }

    fn and(self, other: Shape) -> Self {
        Self {
            finish: self.finish || other.finish,
            ring: self.ring || other.ring,
            videochat: self.videochat || other.videochat,
            participants: self.participants || other.participants,
            rejoin: self.rejoin || other.rejoin,
            events: self.events || other.events,
            record: self.record || other.record,
            webhooks: self.webhooks || other.webhooks,
        }
    }

    /// The shapes a handshake's batches take: rings, answers, declines and their mixes, with
    /// and without webhook deliveries.
    fn common() -> Vec<Shape> {
        let singles = [Shape::RING, Shape::ACCEPT, Shape::DECLINE];
        let mut shapes = Vec::new();
        for webhooks in [false, true] {
            for mask in 1..(1u8 << singles.len()) {
                let shape = singles
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .fold(Shape::NONE, |shape, (_, single)| shape.and(*single));
                let shape = Shape { webhooks, ..shape };
                // A decline's parts are an accept's too: some mixes are the same shape.
                if !shapes.contains(&shape) {
                    shapes.push(shape);
                }
            }
        }
        shapes
    }
}

/// Prepares and plans the common shapes on `connection` by running each over no rows (which
/// writes nothing), so that the first handshakes on it do not pay for that: measured with
/// Postgres's statement log, a connection's first use of each took 1–3 ms more than the later
/// ones (parse, planning, opening its tables), and the first ~60 ms after a start were slow.
pub(super) async fn warm(connection: &mut PgConnection, origin: &str) -> StoreResult<()> {
    let empty = Columns::default();
    for shape in Shape::common() {
        let statement = Statement::compose(&empty, shape, origin, "")?;
        sqlx::query_with(sqlx::AssertSqlSafe(statement.sql), statement.args)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Runs batches of writes on the pool.
pub(in crate::store) struct Applies {
    pub pool: PgPool,
    pub origin: String,
    pub announce: Arc<Announce>,
}

impl Run<ApplyJob, Applied> for Applies {
    fn run<'a>(
        &'a self,
        jobs: &'a [ApplyJob],
    ) -> Pin<Box<dyn Future<Output = Vec<StoreResult<Applied>>> + Send + 'a>> {
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
                .any(|r| r.as_ref().is_ok_and(|a| !a.positions.is_empty()))
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
    /// When the group's claim ends: the earliest of its deliveries' (a delivery written
    /// unclaimed makes the whole group due at once, for any dispatcher to release and send).
    lease: Option<i64>,
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
            let until = d.leased_until_ms.unwrap_or(job.now_ms);
            self.lease = Some(self.lease.map_or(until, |lease| lease.min(until)));
        }
    }

    fn lease(&self) -> i64 {
        self.lease.unwrap_or_default()
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
    /// Writes `jobs` in one statement; per job, the positions of its events and its webhooks'
    /// group, or `Stale`.
    async fn write(&self, jobs: &[ApplyJob]) -> StoreResult<Vec<StoreResult<Applied>>> {
        let mut c = Columns::default();
        for (op, job) in jobs.iter().enumerate() {
            c.add(i32::try_from(op).unwrap_or(i32::MAX), job);
        }
        // Named only for a batch that writes webhooks (most batches of a replica without them).
        let group_id: Option<Arc<str>> =
            (!c.w.op.is_empty()).then(|| format!("grp_{}", uuid::Uuid::now_v7().simple()).into());
        let statement = Statement::compose(
            &c,
            Shape::of(&c),
            &self.origin,
            group_id.as_deref().unwrap_or_default(),
        )?;
        // The text is made of this file's fixed parts only (no value is ever written into it).
        let query = sqlx::query_as_with(sqlx::AssertSqlSafe(statement.sql), statement.args);
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
        // The group holds the deliveries of the operations kept, and only those.
        let size: usize = jobs
            .iter()
            .zip(&ok)
            .filter(|(_, ok)| **ok)
            .map(|(job, _)| job.outbound.deliveries.len())
            .sum();
        let group = group_id
            .filter(|_| size > 0)
            .map(|id| GroupRef { id, size });
        Ok(ok
            .into_iter()
            .zip(positions)
            .zip(jobs)
            .map(|((ok, positions), job)| {
                if ok {
                    Ok(Applied {
                        positions,
                        group: group
                            .clone()
                            .filter(|_| !job.outbound.deliveries.is_empty()),
                    })
                } else {
                    Err(StoreError::Stale)
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The highest `$n` in `sql`.
    fn highest_placeholder(sql: &str) -> usize {
        sql.split('$')
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    fn ring<'a>(c: &mut Columns<'a>, op: i32) {
        c.ops.push(op);
        c.r_op.push(op);
        c.r_id.push("vcr_1");
        c.r_kind.push("direct");
        c.r_initiator.push("alice");
        c.r_target.push("bob");
        c.r_videochat.push(None);
        c.r_engine.push("livekit");
        c.r_pair.push("alice:bob".into());
        c.r_created.push(1);
        c.r_expires.push(2);
        c.r_pushed.push(None);
        c.r_devices.push(None);
        c.e_op.push(op);
        c.e_idx.push(0);
        c.e_recipient.push("bob");
        c.e_kind.push("videochatRequested");
        c.e_payload.push(b"");
        c.e_traceparent.push("");
        c.e_now.push(1);
        c.i_op.push(op);
        c.i_user.push("alice");
        c.i_key.push("k");
        c.i_operation.push("requestDirectVideochat");
        c.i_reply.push(b"{}");
        c.i_now.push(1);
    }

    #[test]
    fn a_batch_of_rings_names_only_the_tables_rings_write() {
        let mut c = Columns::default();
        ring(&mut c, 0);
        ring(&mut c, 1);
        let s = Statement::compose(&c, Shape::of(&c), "replica", "grp_1").unwrap();
        for part in [
            "new_request AS",
            "events AS",
            "mailbox AS",
            "stored AS",
            "record AS",
        ] {
            assert!(s.sql.contains(part), "{part} missing:\n{}", s.sql);
        }
        for absent in [
            "fin AS",
            "ok AS",
            "videochats",
            "participants",
            "webhook_deliveries",
        ] {
            assert!(!s.sql.contains(absent), "{absent} in:\n{}", s.sql);
        }
        assert_eq!(highest_placeholder(&s.sql), s.args.len());
    }

    #[test]
    fn finishing_a_ring_guards_every_insert_of_the_batch() {
        let mut c = Columns::default();
        ring(&mut c, 0);
        c.ops.push(1);
        c.f_op.push(1);
        c.f_id.push("vcr_0");
        c.f_status.push("accepted");
        c.f_at.push(Some(1));
        c.f_now.push(1);
        c.f_videochat.push(Some("vc_1"));
        let s = Statement::compose(&c, Shape::of(&c), "replica", "grp_1").unwrap();
        assert!(s.sql.contains("fin AS") && s.sql.contains("ok AS"));
        // new_request, events and record each keep only operations in `ok`.
        assert_eq!(
            s.sql
                .matches(".op = ANY((SELECT ops FROM ok)::int[])")
                .count(),
            3,
            "{}",
            s.sql
        );
        assert!(s.sql.contains("FROM ok o"));
        assert_eq!(highest_placeholder(&s.sql), s.args.len());
    }

    /// What the service writes for `decision`: its events, its idempotency record and, with
    /// webhooks on, a delivery.
    fn job(decision: &crate::machine::Decision, webhooks: bool) -> ApplyJob {
        use crate::change::IdempotencyRecord;
        use crate::domain::{IdempotencyKey, UserId};
        use crate::store::NewEvent;
        use crate::store::webhooks::{NewDelivery, Outbound};
        ApplyJob {
            change: decision.change.clone(),
            events: decision
                .change
                .events
                .iter()
                .map(|o| NewEvent {
                    recipient: o.recipient.clone(),
                    kind: o.event.name(),
                    payload: Vec::new(),
                })
                .collect(),
            record: Some(IdempotencyRecord {
                user_id: UserId::parse("alice").unwrap(),
                key: IdempotencyKey::parse("k").unwrap(),
                operation: "op".into(),
                outcome: RecordedOutcome::Reply(b"{}".to_vec()),
                created_at_ms: 1_000,
            }),
            traceparent: String::new(),
            now_ms: 1_000,
            outbound: Outbound {
                deliveries: webhooks
                    .then(|| NewDelivery {
                        id: "msg_1".into(),
                        endpoint: "http://receiver".into(),
                        event_type: "call.requested",
                        payload: "{}".into(),
                        leased_until_ms: None,
                    })
                    .into_iter()
                    .collect(),
                push_handoff: None,
            },
        }
    }

    /// The shapes readied on every new connection (`warm`) are the ones a handshake's batches
    /// take: the state machine's own decisions for a ring, its accept and its decline, alone
    /// and mixed in one batch, with and without webhooks.
    #[test]
    fn the_readied_shapes_are_those_of_a_handshakes_batches() {
        use crate::change::Facts;
        use crate::domain::{UserId, UserProfile};
        use crate::engine::Engines;
        use crate::machine::{self, Context, Limits};

        let engines = Engines::from_config(&crate::engine::tests::config()).unwrap();
        let ctx = Context {
            engines: &engines,
            ring_timeout: std::time::Duration::from_secs(45),
            limits: Limits::default(),
            now_ms: 1_000,
        };
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        let facts = Facts {
            users: vec![
                UserProfile::bare(alice.clone()),
                UserProfile::bare(bob.clone()),
            ],
            target_available: true,
            ..Facts::default()
        };
        let ring = machine::request(&facts, &ctx, &alice, &bob, None).unwrap();
        let ringing = Facts {
            request: ring.change.new_request.clone(),
            ..facts
        };
        let accept = machine::accept(&ringing, &ctx, &bob).unwrap();
        let decline = machine::decline(&ringing, &ctx, &bob).unwrap();
        let readied = Shape::common();
        for webhooks in [false, true] {
            let jobs = [&ring, &accept, &decline].map(|d| job(d, webhooks));
            for mask in 1..8u8 {
                let mut c = Columns::default();
                for (op, job) in jobs.iter().enumerate() {
                    if mask & (1 << op) != 0 {
                        c.add(op as i32, job);
                    }
                }
                let shape = Shape::of(&c);
                assert!(
                    readied.contains(&shape),
                    "{shape:?} (mask {mask}) is not readied"
                );
            }
        }
    }

    #[test]
    fn a_batch_that_writes_nothing_only_reports_its_operations() {
        let mut c = Columns::default();
        c.ops.extend([0, 1]);
        let s = Statement::compose(&c, Shape::of(&c), "replica", "grp_1").unwrap();
        assert_eq!(s.sql, "SELECT unnest($1::int[]), -1, 0::bigint");
        assert_eq!(s.args.len(), 1);
    }
}
