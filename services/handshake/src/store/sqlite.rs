//! SQLite: the embedded default, one file, one process. A single connection serializes every
//! transaction, which is what SQLite does for writers anyway and spares us busy-retry logic.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    signal: Arc<watch::Sender<u64>>,
}

impl SqliteStore {
    /// Opens (creating if needed, with its parent directory) the database file of `url`.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Url(format!("cannot create {}: {e}", parent.display())))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let (sender, _) = super::signal();
        Ok(Self {
            pool,
            signal: Arc::new(sender),
        })
    }
}

sql_store!(
    SqliteStore,
    SqliteTx,
    sqlx::Sqlite,
    backend = "sqlite",
    db_system = "sqlite",
    // One connection: transactions are already serialized, positions commit in order.
    lock_outbox = None,
    // One process: the commit itself pokes the local signal.
    notify = None
);
