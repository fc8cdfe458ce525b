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

/// A pool on the database at `url`, and a listener on its outbox channel (to count what the
/// replicas of a test say there).
async fn observed(url: &str) -> (sqlx::PgPool, sqlx::postgres::PgListener) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let mut observer = sqlx::postgres::PgListener::connect(url).await.unwrap();
    observer
        .listen(super::announce::OUTBOX_CHANNEL)
        .await
        .unwrap();
    (pool, observer)
}

/// Counts the notifications on the outbox channel whose payload is `origin`, for `window`.
async fn heard_from(
    listener: &mut sqlx::postgres::PgListener,
    origin: &str,
    window: std::time::Duration,
) -> usize {
    let until = tokio::time::Instant::now() + window;
    let mut heard = 0;
    while let Ok(received) = tokio::time::timeout_at(until, listener.recv()).await {
        if received.unwrap().payload() == origin {
            heard += 1;
        }
    }
    heard
}

/// A replica alone says hello every `hello_every` and nothing for its commits; once another
/// origin speaks on the channel, its commits are announced at once (and it wakes its follower).
#[tokio::test]
async fn a_replica_alone_only_says_hello_and_announces_commits_once_a_peer_speaks() {
    use std::time::Duration;

    use super::announce::{self, OUTBOX_CHANNEL, Timing};

    with_postgres("vc_announce_test", |url| async move {
        let (pool, mut observer) = observed(&url).await;
        let (signal, mut woken) = crate::store::signal();
        let stop = tokio_util::sync::CancellationToken::new();
        let timing = Timing {
            notify_every: Duration::from_millis(1),
            hello_every: Duration::from_millis(200),
            peers_for: Duration::from_millis(300),
            probe_for: Duration::from_millis(300),
        };
        let announce = announce::start(
            &pool,
            "replica-a",
            std::sync::Arc::new(signal),
            timing,
            stop.clone(),
        )
        .await
        .unwrap();
        // Past the start-up window, with nobody else on the channel.
        let _ = heard_from(&mut observer, "replica-a", Duration::from_millis(400)).await;

        let committing = {
            let announce = announce.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    announce.commit_with_events();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let alone = heard_from(&mut observer, "replica-a", Duration::from_millis(1000)).await;
        committing.await.unwrap();
        assert!(
            (2..=8).contains(&alone),
            "alone: {alone} notifications for 100 commits in 1 s (hellos every 200 ms expected)"
        );

        // Another replica says hello: replica-a hears it, wakes its follower, and announces.
        woken.borrow_and_update();
        sqlx::query("SELECT pg_notify($1, 'replica-b')")
            .bind(OUTBOX_CHANNEL)
            .execute(&pool)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), woken.changed())
            .await
            .expect("the peer's hello wakes the follower")
            .unwrap();
        let committing = {
            let announce = announce.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    announce.commit_with_events();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let with_peer = heard_from(&mut observer, "replica-a", Duration::from_millis(110)).await;
        committing.await.unwrap();
        assert!(
            with_peer >= 5,
            "with a peer: {with_peer} notifications for 10 commits in 110 ms"
        );
        stop.cancel();
        pool.close().await;
    })
    .await;
}

/// A replica that starts asks who is there and a running one answers at once (not at its next
/// hello): the new one then announces its commits; a replica alone stops after `probe_for`.
#[tokio::test]
async fn a_starting_replica_asks_who_is_there_and_is_answered_at_once() {
    use std::time::Duration;

    use super::announce::{self, Timing};

    with_postgres("vc_announce_test", |url| async move {
        let (pool, mut observer) = observed(&url).await;
        let timing = Timing {
            notify_every: Duration::from_millis(1),
            // Far off: every hello heard below is a question or its answer.
            hello_every: Duration::from_secs(60),
            peers_for: Duration::from_secs(60),
            probe_for: Duration::from_millis(200),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let start = |origin: &'static str| {
            let (pool, stop) = (pool.clone(), stop.clone());
            async move {
                let (signal, _) = crate::store::signal();
                announce::start(&pool, origin, std::sync::Arc::new(signal), timing, stop)
                    .await
                    .unwrap()
            }
        };
        let a = start("replica-a").await;
        // Alone past its question's window: a's commits are not announced.
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.commit_with_events();
        assert_eq!(
            heard_from(&mut observer, "replica-a", Duration::from_millis(200)).await,
            0,
            "a replica alone announced a commit"
        );

        let b = start("replica-b").await;
        // a answers b's question at once: a hello long before its next regular one.
        assert_eq!(
            heard_from(&mut observer, "replica-a", Duration::from_millis(500)).await,
            1,
            "no answer to the question"
        );
        // b heard it, and announces its commits past its question's window.
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.commit_with_events();
        assert_eq!(
            heard_from(&mut observer, "replica-b", Duration::from_millis(500)).await,
            1,
            "b did not announce its commit"
        );
        stop.cancel();
        pool.close().await;
    })
    .await;
}

/// A new connection comes readied (`warm.rs`): the hot statements are already prepared on it
/// (planned and run once over no rows), and readying it wrote nothing.
#[tokio::test]
async fn a_new_connection_comes_readied_and_readying_writes_nothing() {
    with_postgres("vc_warm_test", |url| async move {
        let store = PostgresStore::connect(&url, 2, "test").await.unwrap();
        let mut connection = store.pool.acquire().await.unwrap();
        let prepared: Vec<String> =
            sqlx::query_scalar("SELECT statement FROM pg_prepared_statements")
                .fetch_all(&mut *connection)
                .await
                .unwrap();
        let writes = prepared
            .iter()
            .filter(|s| s.contains("INSERT INTO outbox_events"))
            .count();
        // Rings, accepts, declines, rings with accepts, rings with declines; with and without
        // webhooks.
        assert_eq!(writes, 10, "{prepared:#?}");
        for load in [
            "AS q(op, actor, key, target, pair_key)",
            "AS q(op, actor, key, target, videochat)",
            "INSERT INTO mailbox_seen",
        ] {
            assert!(
                prepared.iter().any(|s| s.contains(load)),
                "{load} not prepared: {prepared:#?}"
            );
        }
        for table in [
            "videochat_requests",
            "videochats",
            "participants",
            "outbox_events",
            "mailboxes",
            "mailbox_seen",
            "idempotency_records",
            "webhook_deliveries",
        ] {
            let rows: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&mut *connection)
                    .await
                    .unwrap();
            assert_eq!(rows, 0, "{table}");
        }
    })
    .await;
}

/// A role of its own for one test: created `LOGIN` with `attributes` (e.g. a connection limit),
/// granted what the store's schema needs, then `then` run (e.g. a revoke; `{role}` is its name).
/// Returns its name and a URL that logs in as it; [`drop_role`] removes it.
async fn scratch_role(
    url: &str,
    admin: &mut sqlx::PgConnection,
    attributes: &str,
    then: &[&str],
) -> (String, String) {
    use sqlx::ConnectOptions;
    use std::str::FromStr;

    let role = format!("vc_role_{}", uuid::Uuid::new_v4().simple());
    let mut statements = vec![
        format!("CREATE ROLE {role} LOGIN {attributes}"),
        // The migrator makes sure its own table is there (CREATE … IF NOT EXISTS).
        format!("GRANT USAGE, CREATE ON SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ];
    statements.extend(then.iter().map(|s| s.replace("{role}", &role)));
    for statement in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *admin)
            .await
            .unwrap();
    }
    let login = sqlx::postgres::PgConnectOptions::from_str(url)
        .unwrap()
        .username(&role)
        .to_url_lossy()
        .to_string();
    (role, login)
}

async fn drop_role(admin: &mut sqlx::PgConnection, role: &str) {
    for statement in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *admin)
            .await
            .unwrap();
    }
}

/// Readying is only an optimization: a connection on which it fails still serves. Here the
/// store's role may not read one table the loads read, so readying fails on every connection,
/// and the store still opens and answers.
#[tokio::test]
async fn a_connection_that_cannot_be_readied_still_serves() {
    use sqlx::Connection;

    with_postgres("vc_warm_test", |url| async move {
        // The schema, made by its owner.
        PostgresStore::connect(&url, 1, "owner").await.unwrap();
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        let (role, limited) = scratch_role(
            &url,
            &mut admin,
            "",
            &["REVOKE ALL ON push_devices FROM {role}"],
        )
        .await;

        let store = PostgresStore::connect(&limited, 2, "limited").await;
        // Readying stopped at its first statement (the ring's load reads push_devices): none
        // of the write's shapes got prepared, and yet the connection answers.
        let answered = match &store {
            Ok(store) => sqlx::query_scalar::<_, i64>(
                "SELECT (SELECT COUNT(*) FROM users) \
                 + (SELECT COUNT(*) FROM pg_prepared_statements \
                    WHERE statement LIKE '%INSERT INTO ' || 'outbox_events%')",
            )
            .fetch_one(&store.pool)
            .await
            .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        drop(store);
        drop_role(&mut admin, &role).await;
        assert_eq!(answered, Ok(0));
    })
    .await;
}

/// The connections are shared between the hot path's pool and the other one: half each, and
/// never fewer than the other pool needs to hold its LISTEN session and still serve.
#[test]
fn the_connections_are_split_between_the_two_pools() {
    use super::split_connections;
    assert_eq!(split_connections(16), (8, 8));
    assert_eq!(split_connections(5), (2, 3));
    assert_eq!(split_connections(2), (1, 2));
    assert_eq!(split_connections(1), (1, 2));
    assert_eq!(split_connections(0), (1, 2));
}

/// Waits up to 10 s for `count` (a `SELECT COUNT(*)` of backends) to reach 0 on `admin`, and
/// returns what it last was.
async fn backends_left(admin: &mut sqlx::PgConnection, count: &str) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count.to_owned()))
            .fetch_one(&mut *admin)
            .await
            .unwrap();
        if left == 0 || std::time::Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The hot path's thread opens a pool of its own beside the store's other pool, and when the
/// store is dropped the thread closes it: no connection outlives the store.
#[tokio::test]
async fn the_hot_paths_pool_is_opened_beside_the_other_and_closed_with_the_store() {
    use sqlx::Connection;

    with_postgres("vc_hot_test", |url| async move {
        let store = PostgresStore::connect(&url, 4, "test").await.unwrap();
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        let others = "SELECT COUNT(*) FROM pg_stat_activity \
                      WHERE datname = current_database() AND pid <> pg_backend_pid()";
        // Two for the hot path, two for the rest (one of them the LISTEN session).
        let opened: i64 = sqlx::query_scalar(others)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(opened, 4);
        drop(store);
        let left = backends_left(&mut admin, others).await;
        assert_eq!(left, 0, "connections left after the store was dropped");
    })
    .await;
}

/// A hot path whose database cannot be reached fails to start with the connection's error; it
/// does not hang.
#[tokio::test]
async fn a_hot_path_that_cannot_connect_fails_to_start() {
    use super::announce::{Announce, Timing};
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let options = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres");
    let started = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        super::hot::start(
            options,
            1,
            "test",
            std::sync::Arc::new(Announce::new(Timing::default())),
            tokio_util::sync::CancellationToken::new(),
        ),
    )
    .await
    .expect("the start neither failed nor succeeded in 30 s");
    assert!(
        matches!(
            started,
            Err(crate::store::StoreError::Unavailable(_) | crate::store::StoreError::Database(_))
        ),
        "{:?}",
        started.err()
    );
}

/// A store whose hot path cannot start (here its role may open three connections, and the
/// store wants four) fails to open, and what it had started by then — the other pool, the LISTEN
/// session, the announcer — ends with it: no connection is left behind.
#[tokio::test]
async fn a_store_whose_hot_path_cannot_start_leaves_no_connection_behind() {
    use sqlx::Connection;

    with_postgres("vc_hot_test", |url| async move {
        // The schema, made by its owner.
        drop(PostgresStore::connect(&url, 4, "owner").await.unwrap());
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        let (role, limited) = scratch_role(&url, &mut admin, "CONNECTION LIMIT 3", &[]).await;

        let opened = PostgresStore::connect(&limited, 4, "limited").await;
        let refused = opened.as_ref().err().map(ToString::to_string);
        drop(opened);
        let count = format!("SELECT COUNT(*) FROM pg_stat_activity WHERE usename = '{role}'");
        let left = backends_left(&mut admin, &count).await;
        drop_role(&mut admin, &role).await;
        // sqlx retries the refused connection until its acquire timeout, and says so.
        assert!(refused.is_some(), "the store opened on too few connections");
        assert_eq!(left, 0, "connections left after the store failed to open");
    })
    .await;
}
