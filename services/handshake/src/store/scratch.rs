//! Scratch databases for the store's own tests: a Postgres database made for one test and dropped
//! after it (also when it fails), and a SQLite file in a directory of its own.

use std::future::Future;
use std::panic::{AssertUnwindSafe, resume_unwind};
use std::path::PathBuf;

use futures_util::FutureExt;
use sqlx::Connection;

/// Where the scratch databases are created: the same server and variable as the videochat
/// crate's Postgres tests (README, "Tests").
fn postgres_admin_url() -> String {
    std::env::var("VIDEOCHAT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Runs `test` with the URL of a fresh, empty Postgres database named `<prefix>_<uuid>`, and
/// drops that database afterwards whether the test passed or not.
pub(super) async fn with_postgres<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let admin_url = postgres_admin_url();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Postgres tests need a server at {admin_url} ({e}). Start one, or point \
                 VIDEOCHAT_TEST_POSTGRES_URL at one (a user allowed to CREATE DATABASE)."
            )
        });
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    // The name is this test's own: a fixed prefix and a uuid.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = admin_url
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin_url);
    let outcome = AssertUnwindSafe(test(format!("{base}/{name}")))
        .catch_unwind()
        .await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    if let Err(panic) = outcome {
        resume_unwind(panic);
    }
}

/// A directory of its own under the temp dir, removed when dropped (also when the test panics).
pub(super) struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("vc-store-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
