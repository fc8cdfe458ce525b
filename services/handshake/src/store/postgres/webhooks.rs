//! Postgres's [`WebhookStore`]: the delivery outbox and push devices. Any number of replicas
//! dispatch from one table: a claim skips rows another replica has locked and leases what it
//! takes (`FOR UPDATE SKIP LOCKED`).
//!
//! A write batch's deliveries are written as one row of `webhook_groups` (`apply.rs`, and
//! [`GroupRef`](crate::store::webhooks::GroupRef) for why), claimed by the replica that wrote
//! them; they become rows of `webhook_deliveries` only if one is not delivered at its first
//! attempt, or if the group's lease runs out.

use async_trait::async_trait;

use super::PostgresStore;
use crate::domain::{PushDevice, PushToken, RequestId, UserId};
use crate::store::StoreResult;
use crate::store::webhooks::{
    DELIVERY_COLUMNS, Delivery, DeliveryRow, GroupEnd, RetrySelection, Settle, WebhookStore,
    delivery_from_row, pushed_devices_of,
};

/// Forgets the delivered ones of a batch of outcomes.
const DELIVERED: &str = "DELETE FROM webhook_deliveries WHERE id = ANY($1::text[])";

/// Forgets groups that ended.
const GROUPS_ENDED: &str = "DELETE FROM webhook_groups WHERE id = ANY($1::text[])";

/// Writes a group's undelivered deliveries as rows of their own, settled: `$1`… the columns,
/// one element per delivery. A delivery that has a row already (its group was released
/// meanwhile) keeps it.
const UNDELIVERED: &str = "INSERT INTO webhook_deliveries \
     (id, endpoint, event_type, payload, created_at_ms, next_attempt_at_ms, attempts, status, \
      last_error, failed_at_ms, retried_at_ms, traceparent) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
                          $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::bigint[], \
                          $11::bigint[], $12::text[]) \
     ON CONFLICT (id) DO NOTHING";

/// Most groups one release takes (each holds up to a write batch's deliveries).
const RELEASE_GROUPS: i64 = 64;

/// Turns lapsed groups into pending rows due at `$1`, attempted once (the attempt their
/// replica may have made); `$2` groups at most, skipping those another replica is releasing.
const RELEASE: &str = "WITH lapsed AS ( \
         DELETE FROM webhook_groups WHERE id IN ( \
             SELECT id FROM webhook_groups WHERE leased_until_ms <= $1 \
             ORDER BY leased_until_ms LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING ids, endpoints, event_types, payloads, traceparents, created_at_ms), \
     released AS ( \
         INSERT INTO webhook_deliveries (id, endpoint, event_type, payload, created_at_ms, \
             next_attempt_at_ms, attempts, status, traceparent) \
         SELECT d.id, d.endpoint, d.event_type, d.payload, d.created, $1, 1, 'pending', d.traceparent \
         FROM lapsed l, UNNEST(l.ids, l.endpoints, l.event_types, l.payloads, l.traceparents, \
                               l.created_at_ms) AS d(id, endpoint, event_type, payload, traceparent, created) \
         ON CONFLICT (id) DO NOTHING RETURNING 1) \
     SELECT COUNT(*) FROM released";

/// The columns of [`UNDELIVERED`], one element per delivery.
#[derive(Default)]
struct UndeliveredColumns<'a> {
    id: Vec<&'a str>,
    endpoint: Vec<&'a str>,
    event_type: Vec<&'a str>,
    payload: Vec<&'a str>,
    created_at_ms: Vec<i64>,
    next_attempt_at_ms: Vec<i64>,
    attempts: Vec<i64>,
    status: Vec<&'static str>,
    last_error: Vec<&'a str>,
    failed_at_ms: Vec<Option<i64>>,
    retried_at_ms: Vec<Option<i64>>,
    traceparent: Vec<&'a str>,
}

impl<'a> UndeliveredColumns<'a> {
    fn of(ended: &'a [GroupEnd], now_ms: i64) -> Self {
        let mut c = Self::default();
        for (delivery, settle) in ended.iter().flat_map(|g| &g.undelivered) {
            let (next, status, error, failed_at) = match settle {
                // Not undelivered after all: nothing to keep.
                Settle::Delivered => continue,
                Settle::Retry {
                    next_attempt_at_ms,
                    error,
                } => (*next_attempt_at_ms, "pending", error.as_str(), None),
                Settle::Failed { error } => (now_ms, "failed", error.as_str(), Some(now_ms)),
            };
            c.id.push(&delivery.id);
            c.endpoint.push(&delivery.endpoint);
            c.event_type.push(&delivery.event_type);
            c.payload.push(&delivery.payload);
            c.created_at_ms.push(delivery.created_at_ms);
            c.next_attempt_at_ms.push(next);
            c.attempts.push(i64::from(delivery.attempts));
            c.status.push(status);
            c.last_error.push(error);
            c.failed_at_ms.push(failed_at);
            c.retried_at_ms.push(delivery.retried_at_ms);
            c.traceparent.push(&delivery.traceparent);
        }
        c
    }
}

#[async_trait]
impl WebhookStore for PostgresStore {
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_deliveries d SET next_attempt_at_ms = $2, attempts = d.attempts + 1 \
             FROM (SELECT id FROM webhook_deliveries WHERE status = 'pending' \
                   AND next_attempt_at_ms <= $1 ORDER BY next_attempt_at_ms LIMIT $3 \
                   FOR UPDATE SKIP LOCKED) c \
             WHERE d.id = c.id RETURNING {}",
            DELIVERY_COLUMNS
                .split(", ")
                .map(|c| format!("d.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(now_ms)
        .bind(lease_until_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(delivery_from_row).collect())
    }

    async fn settle_deliveries(
        &self,
        settled: &[(String, Settle)],
        now_ms: i64,
    ) -> StoreResult<()> {
        if settled.is_empty() {
            return Ok(());
        }
        let delivered: Vec<String> = settled
            .iter()
            .filter(|(_, s)| *s == Settle::Delivered)
            .map(|(id, _)| id.clone())
            .collect();
        if delivered.len() == settled.len() {
            // The usual case: one statement, no transaction around it.
            sqlx::query(DELIVERED)
                .bind(&delivered)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        if !delivered.is_empty() {
            sqlx::query(DELIVERED)
                .bind(delivered)
                .execute(&mut *tx)
                .await?;
        }
        for (id, settle) in settled {
            let query = match settle {
                Settle::Delivered => continue,
                Settle::Retry {
                    next_attempt_at_ms,
                    error,
                } => sqlx::query(
                    "UPDATE webhook_deliveries SET next_attempt_at_ms = $2, last_error = $3 \
                     WHERE id = $1 AND status = 'pending'",
                )
                .bind(id.as_str())
                .bind(*next_attempt_at_ms)
                .bind(error.as_str()),
                Settle::Failed { error } => sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'failed', last_error = $2, failed_at_ms = $3 \
                     WHERE id = $1 AND status = 'pending'",
                )
                .bind(id.as_str())
                .bind(error.as_str())
                .bind(now_ms),
            };
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn settle_groups(&self, ended: &[GroupEnd], now_ms: i64) -> StoreResult<()> {
        if ended.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = ended.iter().map(|g| &*g.id).collect();
        let undelivered = UndeliveredColumns::of(ended, now_ms);
        if undelivered.id.is_empty() {
            // The usual case: every delivery went through at once. One statement.
            sqlx::query(GROUPS_ENDED)
                .bind(&ids)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        let c = undelivered;
        let mut tx = self.pool.begin().await?;
        sqlx::query(UNDELIVERED)
            .bind(&c.id)
            .bind(&c.endpoint)
            .bind(&c.event_type)
            .bind(&c.payload)
            .bind(&c.created_at_ms)
            .bind(&c.next_attempt_at_ms)
            .bind(&c.attempts)
            .bind(&c.status)
            .bind(&c.last_error)
            .bind(&c.failed_at_ms)
            .bind(&c.retried_at_ms)
            .bind(&c.traceparent)
            .execute(&mut *tx)
            .await?;
        sqlx::query(GROUPS_ENDED)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_lapsed_groups(&self, now_ms: i64) -> StoreResult<u64> {
        let (released,): (i64,) = sqlx::query_as(RELEASE)
            .bind(now_ms)
            .bind(RELEASE_GROUPS)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(released).unwrap_or_default())
    }

    async fn pending_deliveries(&self) -> StoreResult<u64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending') \
                  + (SELECT COALESCE(SUM(cardinality(ids)), 0)::bigint FROM webhook_groups)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn failed_deliveries(&self, limit: i64) -> StoreResult<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE status = 'failed' \
             ORDER BY created_at_ms, id LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(delivery_from_row).collect())
    }

    async fn retry_deliveries(&self, which: &RetrySelection, now_ms: i64) -> StoreResult<u64> {
        let done =
            match which {
                RetrySelection::AllFailed => sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at_ms = $1, \
                     retried_at_ms = $1, attempts = 0 WHERE status = 'failed'",
                )
                .bind(now_ms)
                .execute(&self.pool)
                .await?,
                RetrySelection::Ids(ids) => sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at_ms = $1, \
                     retried_at_ms = $1, attempts = 0 \
                     WHERE status = 'failed' AND id = ANY($2::text[])",
                )
                .bind(now_ms)
                .bind(ids)
                .execute(&self.pool)
                .await?,
            };
        Ok(done.rows_affected())
    }

    async fn prune_deliveries(&self, before_ms: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status = 'failed' AND failed_at_ms < $1",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn register_push_device(
        &self,
        user: &UserId,
        device: &PushDevice,
        now_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO push_devices (user_id, platform, token, voip, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (user_id, token) DO UPDATE SET platform = excluded.platform, voip = excluded.voip",
        )
        .bind(user.as_str())
        .bind(device.platform.as_str())
        .bind(device.token.as_str())
        .bind(i64::from(device.voip))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn unregister_push_device(&self, user: &UserId, token: &PushToken) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM push_devices WHERE user_id = $1 AND token = $2")
            .bind(user.as_str())
            .bind(token.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn pushed_devices(&self, request: &RequestId) -> StoreResult<Option<Vec<PushDevice>>> {
        pushed_devices_of(&self.pool, request).await
    }
}
