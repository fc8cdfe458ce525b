//! Postgres: the production store. Any number of service replicas share one database; they hear
//! of each other's events through LISTEN/NOTIFY on [`OUTBOX_CHANNEL`].

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::watch;

use super::sql::{
    RequestRow, UserRow, avatar_3d_json, participant_from_row, request_columns, request_from_row,
    requests_from_rows, sql_store, user_columns, user_from_row, videochat_from_row,
};
use super::{IdempotencyRecord, NewEvent, RecordedOutcome, StoreError, StoreResult, StoredEvent};
use crate::domain::{
    ConnectionId, GatewayId, IdempotencyKey, Participant, Permissions, RequestId, RequestStatus,
    UserId, UserPatch, UserProfile, VideochatId, VideochatRequest,
};

/// NOTIFY channel announcing new outbox events.
pub const OUTBOX_CHANNEL: &str = "videochat_outbox";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

pub struct PostgresStore {
    pool: PgPool,
    signal: Arc<watch::Sender<u64>>,
    /// Stops the LISTEN task (and frees its connection) when the store is dropped.
    _listener: tokio_util::sync::DropGuard,
}

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        let (sender, _) = super::signal();
        let signal = Arc::new(sender);
        let listener = PgListener::connect_with(&pool).await?;
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(listen(listener, signal.clone(), stop.clone()));
        Ok(Self {
            pool,
            signal,
            _listener: stop.drop_guard(),
        })
    }
}

/// Relays NOTIFYs from every replica into the local signal. On a lost connection `PgListener`
/// reconnects by itself; readers also poll, so a NOTIFY missed meanwhile only delays delivery.
async fn listen(
    mut listener: PgListener,
    signal: Arc<watch::Sender<u64>>,
    stop: tokio_util::sync::CancellationToken,
) {
    if let Err(error) = listener.listen(OUTBOX_CHANNEL).await {
        tracing::error!(%error, "cannot LISTEN for outbox events; falling back to polling");
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = listener.try_recv() => match received {
                Ok(_) => super::bump(&signal),
                Err(error) => {
                    tracing::warn!(%error, "outbox LISTEN connection lost; reconnecting");
                    super::bump(&signal);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
        }
    }
}
sql_store!(
    PostgresStore,
    PostgresTx,
    sqlx::Postgres,
    backend = "postgres",
    db_system = "postgresql",
    // Outbox positions come from a sequence, allocated at insert but visible at commit. Taking
    // this lock before appending makes commit order equal position order, so a reader that has
    // seen position N has seen everything below it.
    lock_outbox = Some("SELECT pg_advisory_xact_lock(72630001)"),
    notify = Some("SELECT pg_notify('videochat_outbox', '')")
);
