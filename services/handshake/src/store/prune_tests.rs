//! Pruning the outbox: events older than the retention go, newer ones stay, on both backends.
//! (What the Postgres statement reads is checked in `postgres/tests.rs`.)

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Database, Executor, IntoArguments, Pool};

use super::scratch::{TempDir, with_postgres};
use super::{PostgresStore, SqliteStore, Store};

/// Far enough in the past that no idempotency record or ring of these tests is pruned.
const KEEP_ALL: i64 = 0;

/// A one-byte payload, as each dialect writes a literal blob.
pub(super) fn blob<DB: Database>() -> &'static str {
    if DB::NAME == "PostgreSQL" {
        "'\\x00'"
    } else {
        "x'00'"
    }
}

/// Appends one event per statement (so, on Postgres, one transaction id each) for `user` at
/// positions `seqs`, created at `at_ms`.
pub(super) async fn append<DB>(pool: &Pool<DB>, user: &str, seqs: std::ops::Range<i64>, at_ms: i64)
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments: IntoArguments<DB>,
{
    for seq in seqs {
        let statement = format!(
            "INSERT INTO outbox_events (recipient_user_id, seq, kind, payload, created_at_ms, origin) \
             VALUES ('{user}', {seq}, 'videochatRequested', {}, {at_ms}, 'test')",
            blob::<DB>()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(pool)
            .await
            .unwrap();
    }
}

/// The (recipient, position) of every event left, in order.
async fn left<DB>(pool: &Pool<DB>) -> Vec<(String, i64)>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'r> (String, i64): sqlx::FromRow<'r, DB::Row>,
    for<'q> <DB as Database>::Arguments: IntoArguments<DB>,
{
    sqlx::query_as(
        "SELECT recipient_user_id, seq FROM outbox_events ORDER BY recipient_user_id, seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The behaviour both backends share: old events go, new ones stay, a second prune finds nothing,
/// and a cutoff past every event empties the outbox.
async fn prunes_old_events_only<DB>(store: &dyn Store, pool: &Pool<DB>)
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'r> (String, i64): sqlx::FromRow<'r, DB::Row>,
    for<'q> <DB as Database>::Arguments: IntoArguments<DB>,
{
    append(pool, "alice", 1..4, 1_000).await;
    append(pool, "bob", 1..3, 2_000).await;
    append(pool, "alice", 4..6, 10_000).await;
    append(pool, "bob", 3..4, 11_000).await;

    assert_eq!(store.prune(5_000, KEEP_ALL, KEEP_ALL).await.unwrap(), 5);
    let kept = vec![
        ("alice".to_owned(), 4),
        ("alice".to_owned(), 5),
        ("bob".to_owned(), 3),
    ];
    assert_eq!(left(pool).await, kept, "{}", DB::NAME);

    assert_eq!(store.prune(5_000, KEEP_ALL, KEEP_ALL).await.unwrap(), 0);
    assert_eq!(left(pool).await, kept, "{}", DB::NAME);

    assert_eq!(store.prune(20_000, KEEP_ALL, KEEP_ALL).await.unwrap(), 3);
    assert_eq!(left(pool).await, vec![], "{}", DB::NAME);
}

#[tokio::test]
async fn sqlite_prunes_old_events_only() {
    let dir = TempDir::new();
    let url = format!("sqlite://{}", dir.0.join("videochat.db").display());
    let store = SqliteStore::connect(&url, "test").await.unwrap();
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    prunes_old_events_only(&store, &pool).await;
    pool.close().await;
}

#[tokio::test]
async fn postgres_prunes_old_events_only() {
    with_postgres("vc_prune_test", |url| async move {
        let store = PostgresStore::connect(&url, 2, "test").await.unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        prunes_old_events_only(&store, &pool).await;
        pool.close().await;
    })
    .await;
}
