//! SQLite's [`WebhookStore`]: the delivery outbox and push devices on the one writer
//! connection (one process, one dispatcher: no claim can race another).

use async_trait::async_trait;

use super::SqliteStore;
use super::commit::Settling;
use crate::domain::{PushDevice, PushToken, RequestId, UserId};
use crate::store::webhooks::{
    DELIVERY_COLUMNS, Delivery, DeliveryRow, GroupEnd, RetrySelection, Settle, WebhookStore,
    delivery_from_row, pushed_devices_of,
};
use crate::store::{StoreError, StoreResult};

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        let mut connection = self.writer.lock().await;
        let rows: Vec<DeliveryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_deliveries SET next_attempt_at_ms = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' \
                          AND next_attempt_at_ms <= $1 ORDER BY next_attempt_at_ms LIMIT $3) \
             RETURNING {DELIVERY_COLUMNS}"
        )))
        .bind(now_ms)
        .bind(lease_until_ms)
        .bind(limit)
        .fetch_all(&mut *connection)
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
        // Recorded by the committer, in the transaction of its next batch (`commit.rs`).
        let (done, result) = tokio::sync::oneshot::channel();
        self.committer.settle(Settling {
            settled: settled.to_vec(),
            now_ms,
            done,
        });
        result.await.map_err(|_| {
            StoreError::Committer(std::io::Error::other(
                "the SQLite committer stopped before recording webhook outcomes",
            ))
        })?
    }

    /// SQLite writes every delivery as a row of its own (`commit.rs`; an insert costs it little),
    /// so no group of its can end: one handed here was not written by this store.
    async fn settle_groups(&self, ended: &[GroupEnd], _now_ms: i64) -> StoreResult<()> {
        match ended.first() {
            None => Ok(()),
            Some(group) => Err(StoreError::Corrupt {
                table: "webhook_groups",
                detail: format!("group {} ended on SQLite, which writes no groups", group.id),
            }),
        }
    }

    /// No groups here (see [`Self::settle_groups`]): none to release.
    async fn release_lapsed_groups(&self, _now_ms: i64) -> StoreResult<u64> {
        Ok(0)
    }

    async fn pending_deliveries(&self) -> StoreResult<u64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(&self.readers)
                .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn failed_deliveries(&self, limit: i64) -> StoreResult<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE status = 'failed' \
             ORDER BY created_at_ms, id LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(delivery_from_row).collect())
    }

    async fn retry_deliveries(&self, which: &RetrySelection, now_ms: i64) -> StoreResult<u64> {
        let mut connection = self.writer.lock().await;
        let done =
            match which {
                RetrySelection::AllFailed => sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at_ms = $1, \
                     retried_at_ms = $1, attempts = 0 WHERE status = 'failed'",
                )
                .bind(now_ms)
                .execute(&mut *connection)
                .await?,
                RetrySelection::Ids(ids) => {
                    let ids = serde_json::Value::from(ids.clone()).to_string();
                    sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at_ms = $1, \
                     retried_at_ms = $1, attempts = 0 \
                     WHERE status = 'failed' AND id IN (SELECT value FROM json_each($2))",
                )
                .bind(now_ms)
                .bind(ids)
                .execute(&mut *connection)
                .await?
                }
            };
        Ok(done.rows_affected())
    }

    async fn prune_deliveries(&self, before_ms: i64) -> StoreResult<u64> {
        let mut connection = self.writer.lock().await;
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status = 'failed' AND failed_at_ms < $1",
        )
        .bind(before_ms)
        .execute(&mut *connection)
        .await?;
        Ok(done.rows_affected())
    }

    async fn register_push_device(
        &self,
        user: &UserId,
        device: &PushDevice,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut connection = self.writer.lock().await;
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
        .execute(&mut *connection)
        .await?;
        Ok(())
    }

    async fn unregister_push_device(&self, user: &UserId, token: &PushToken) -> StoreResult<bool> {
        let mut connection = self.writer.lock().await;
        let done = sqlx::query("DELETE FROM push_devices WHERE user_id = $1 AND token = $2")
            .bind(user.as_str())
            .bind(token.as_str())
            .execute(&mut *connection)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn pushed_devices(&self, request: &RequestId) -> StoreResult<Option<Vec<PushDevice>>> {
        pushed_devices_of(&self.readers, request).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::scratch::TempDir;

    /// SQLite writes no groups: none to release, and a group handed to it to end is refused as
    /// not its own (nothing is written).
    #[tokio::test]
    async fn sqlite_has_no_groups_to_release_and_refuses_to_end_one() {
        let dir = TempDir::new();
        let url = format!("sqlite://{}", dir.0.join("videochat.db").display());
        let store = SqliteStore::connect(&url, "test").await.unwrap();
        assert_eq!(store.release_lapsed_groups(i64::MAX).await.unwrap(), 0);
        store.settle_groups(&[], 1).await.unwrap();
        let foreign = GroupEnd {
            id: Arc::from("grp_elsewhere"),
            undelivered: Vec::new(),
        };
        let refused = store.settle_groups(&[foreign], 1).await;
        assert!(
            matches!(&refused, Err(StoreError::Corrupt { table: "webhook_groups", detail }) if detail.contains("grp_elsewhere")),
            "{refused:?}"
        );
        assert_eq!(store.pending_deliveries().await.unwrap(), 0);
    }
}
