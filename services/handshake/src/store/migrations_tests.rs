//! Migrations against rows that existed before them: a migration that backfills is tested on a
//! database migrated only up to the one before it, seeded the way that older schema allowed, then
//! brought up to date by the service's own migrations. The same body runs on both backends.

use std::panic::{AssertUnwindSafe, resume_unwind};

use futures_util::FutureExt;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::scratch::{TempDir, with_postgres};
use super::webhooks::{decode_devices, pushed_devices_of};
use crate::domain::RequestId;

/// The same directories the stores migrate from (`sqlite.rs`, `postgres/mod.rs`).
static SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../../migrations/postgres");

/// `0008_push_cancel_devices_and_webhook_traces.sql`.
const PUSH_DEVICES_AND_TRACES: i64 = 8;

/// Rows as the schema at 0007 allows them: three rings (pending and pushed, pending and not
/// pushed, answered after it was pushed) and one webhook delivery.
const SEED_AT_0007: [&str; 5] = [
    "INSERT INTO videochats (id, mode, engine, room, shared_secret, created_at_ms) \
     VALUES ('vc_1', 'direct', 'livekit', 'room_1', 'secret', 1000)",
    "INSERT INTO videochat_requests (id, kind, initiator_id, target_id, videochat_id, engine, \
     status, pair_key, created_at_ms, expires_at_ms, answered_at_ms, push_handoff_at_ms) \
     VALUES ('vcr_pending_pushed', 'direct', 'alice', 'bob', NULL, 'livekit', 'pending', \
     'alice:bob', 1000, 31000, NULL, 1001)",
    "INSERT INTO videochat_requests (id, kind, initiator_id, target_id, videochat_id, engine, \
     status, pair_key, created_at_ms, expires_at_ms, answered_at_ms, push_handoff_at_ms) \
     VALUES ('vcr_pending_unpushed', 'direct', 'carol', 'dave', NULL, 'livekit', 'pending', \
     'carol:dave', 1000, 31000, NULL, NULL)",
    "INSERT INTO videochat_requests (id, kind, initiator_id, target_id, videochat_id, engine, \
     status, pair_key, created_at_ms, expires_at_ms, answered_at_ms, push_handoff_at_ms) \
     VALUES ('vcr_answered_pushed', 'direct', 'erin', 'frank', 'vc_1', 'livekit', 'accepted', \
     'erin:frank', 1000, 31000, 2000, 1001)",
    "INSERT INTO webhook_deliveries (id, endpoint, event_type, payload, created_at_ms, \
     next_attempt_at_ms, status) \
     VALUES ('msg_old', 'https://hooks.example/handshake', 'push.ring', '{}', 1000, 1000, \
     'pending')",
];

/// Migration 0008 on rows written before it: a ring that was ringing and pushed gets an empty
/// device list (its end still sends a `push.cancel`, naming no devices), any other ring stays
/// unpushed (NULL), and an old delivery gets an empty `traceparent`.
async fn push_devices_and_traces_backfill<DB>(pool: &Pool<DB>, migrator: &Migrator)
where
    DB: Database,
    DB::Connection: Migrate,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (String, Option<Vec<u8>>): FromRow<'r, DB::Row>,
    for<'r> (String, String): FromRow<'r, DB::Row>,
    for<'r> (Option<Vec<u8>>,): FromRow<'r, DB::Row>,
{
    assert!(
        migrator.version_exists(PUSH_DEVICES_AND_TRACES),
        "{} has no migration {PUSH_DEVICES_AND_TRACES}",
        DB::NAME
    );
    migrator
        .run_to(PUSH_DEVICES_AND_TRACES - 1, pool)
        .await
        .unwrap();
    let applied: Vec<(i64,)> =
        sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap();
    let applied: Vec<i64> = applied.into_iter().map(|(v,)| v).collect();
    assert_eq!(applied, (1..PUSH_DEVICES_AND_TRACES).collect::<Vec<_>>());

    for statement in SEED_AT_0007 {
        sqlx::query(statement).execute(pool).await.unwrap();
    }

    migrator.run(pool).await.unwrap();

    let rings: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT id, push_devices FROM videochat_requests ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        rings,
        vec![
            ("vcr_answered_pushed".to_owned(), None),
            ("vcr_pending_pushed".to_owned(), Some(b"[]".to_vec())),
            ("vcr_pending_unpushed".to_owned(), None),
        ],
        "{}",
        DB::NAME
    );
    let deliveries: Vec<(String, String)> =
        sqlx::query_as("SELECT id, traceparent FROM webhook_deliveries ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        deliveries,
        vec![("msg_old".to_owned(), String::new())],
        "{}",
        DB::NAME
    );

    // The service reads the backfilled value: the ring was pushed, to no devices it knows.
    let backfilled = rings[1].1.as_deref().unwrap();
    assert_eq!(decode_devices(backfilled).unwrap(), vec![]);
    assert_eq!(decode_devices(b"[]").unwrap(), vec![]);
    for (id, pushed_to) in [
        ("vcr_pending_pushed", Some(vec![])),
        ("vcr_pending_unpushed", None),
        ("vcr_answered_pushed", None),
    ] {
        let request = RequestId::parse(id).unwrap();
        assert_eq!(
            pushed_devices_of(pool, &request).await.unwrap(),
            pushed_to,
            "{} {id}",
            DB::NAME
        );
    }
}

#[tokio::test]
async fn sqlite_0008_backfills_push_devices_and_traceparent() {
    let dir = TempDir::new();
    let options = SqliteConnectOptions::new()
        .filename(dir.0.join("videochat.db"))
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    push_devices_and_traces_backfill(&pool, &SQLITE).await;
    pool.close().await;
}

#[tokio::test]
async fn postgres_0008_backfills_push_devices_and_traceparent() {
    with_postgres("vc_migrations_test", |url| async move {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        let outcome = AssertUnwindSafe(push_devices_and_traces_backfill(&pool, &POSTGRES))
            .catch_unwind()
            .await;
        pool.close().await;
        if let Err(panic) = outcome {
            resume_unwind(panic);
        }
    })
    .await;
}
