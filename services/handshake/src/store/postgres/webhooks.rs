//! Postgres's [`WebhookStore`]: the delivery outbox and push devices. Any number of replicas
//! dispatch from one table: a claim skips rows another replica has locked and leases what it
//! takes (`FOR UPDATE SKIP LOCKED`).

use async_trait::async_trait;

use super::PostgresStore;
use crate::domain::{PushDevice, PushToken, RequestId, UserId};
use crate::store::StoreResult;
use crate::store::webhooks::{
    DELIVERY_COLUMNS, Delivery, DeliveryRow, RetrySelection, Settle, WebhookStore,
    delivery_from_row, pushed_devices_of,
};

/// Forgets the delivered ones of a batch of outcomes.
const DELIVERED: &str = "DELETE FROM webhook_deliveries WHERE id = ANY($1::text[])";

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

    async fn pending_deliveries(&self) -> StoreResult<u64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")
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
