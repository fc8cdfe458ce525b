//! The private-Postgres harness that fault tests use (`common::private_pg`): a server of the
//! test's own that can be crashed and started again without touching the shared one.

mod common;

use common::private_pg::PrivatePg;
use sqlx::Connection;

async fn select_one(url: &str) -> Result<i32, sqlx::Error> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut connection)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_postgres_stops_like_a_crash_and_starts_again() {
    let pg = PrivatePg::start_new().await;
    assert_eq!(select_one(&pg.url()).await.unwrap(), 1);
    let mut held = sqlx::PgConnection::connect(&pg.url()).await.unwrap();

    pg.stop_immediate().await;
    // The open connection broke, and no new one is accepted.
    assert!(
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&mut held)
            .await
            .is_err()
    );
    assert!(select_one(&pg.url()).await.is_err());

    pg.start().await;
    assert_eq!(select_one(&pg.url()).await.unwrap(), 1);

    let dir_gone = {
        let url = pg.url();
        drop(pg);
        url
    };
    assert!(
        select_one(&dir_gone).await.is_err(),
        "dropping the harness stops the server"
    );
}
