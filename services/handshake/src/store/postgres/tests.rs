//! How the store's statements run on its own sessions (their settings, their plans): what a
//! background statement costs is a cost every handshake waiting behind it pays.

use sqlx::Row;

use super::{PRUNE_OUTBOX, PostgresStore};
use crate::store::scratch::with_postgres;

/// Every row a plan node returned or looked at and threw away, over the whole plan.
fn rows_touched(node: &serde_json::Value) -> f64 {
    let own: f64 = [
        "Actual Rows",
        "Rows Removed by Filter",
        "Rows Removed by Index Recheck",
    ]
    .iter()
    .filter_map(|key| node.get(*key).and_then(serde_json::Value::as_f64))
    .sum();
    let children: f64 = node
        .get("Plans")
        .and_then(serde_json::Value::as_array)
        .map(|plans| plans.iter().map(rows_touched).sum())
        .unwrap_or_default();
    own + children
}

/// `EXPLAIN (ANALYZE, FORMAT JSON)` of `statement` with `bind` on one of the store's own
/// connections, rolled back.
async fn explain_analyze(store: &PostgresStore, statement: &str, bind: i64) -> serde_json::Value {
    let mut tx = store.pool.begin().await.unwrap();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {statement}"
    )))
    .bind(bind)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    // The column is `json`, whose bytes are its text.
    serde_json::from_str(&row.try_get_unchecked::<String, _>(0).unwrap()).unwrap()
}

/// With 2,000 recent events and 5 old ones, the prune looks at the old ones and the first
/// recent one, not at the 2,000: its cost follows what it deletes, not the outbox's size. (The
/// BRIN index it used before returned every page vacuum had not summarized, i.e. all of them.)
#[tokio::test]
async fn the_outbox_prune_reads_what_it_deletes_not_the_outbox() {
    with_postgres("vc_plan_test", |url| async move {
        let store = PostgresStore::connect(&url, 2, "test").await.unwrap();
        crate::store::prune_tests::append(&store.pool, "old", 1..6, 1_000).await;
        sqlx::raw_sql(
            "INSERT INTO outbox_events (recipient_user_id, seq, kind, payload, created_at_ms, origin) \
             SELECT 'recent', n, 'videochatRequested', '\\x00', 10000 + n, 'test' \
             FROM generate_series(1, 2000) AS n",
        )
        .execute(&store.pool)
        .await
        .unwrap();

        let plan = explain_analyze(&store, PRUNE_OUTBOX, 5_000).await;
        let touched = rows_touched(&plan[0]["Plan"]);
        assert!(
            touched <= 20.0,
            "the prune touched {touched} rows to delete 5 of 2,005: {plan:#}"
        );
        let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox_events")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, 2_005, "EXPLAIN ANALYZE was rolled back");
    })
    .await;
}

/// The store's sessions never JIT-compile: with sequential scans ruled out, a statement that
/// only a scan can serve is costed far past `jit_above_cost`, and the presence sweep's
/// `DELETE FROM gateways` was compiled with LLVM at every run (60–150 ms of a core each time).
#[tokio::test]
async fn the_stores_sessions_never_jit_compile() {
    with_postgres("vc_plan_test", |url| async move {
        let store = PostgresStore::connect(&url, 2, "test").await.unwrap();
        let (jit,): (String,) = sqlx::query_as("SHOW jit")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(jit, "off");
        let plan = explain_analyze(
            &store,
            "DELETE FROM gateways WHERE lease_expires_at_ms < $1",
            1_000,
        )
        .await;
        assert!(
            plan[0].get("JIT").is_none(),
            "the sweep's statement was JIT-compiled: {plan:#}"
        );
    })
    .await;
}
