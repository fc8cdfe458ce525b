//! SQLite's checkpointer: the thread that copies the write-ahead log back into the database file.
//!
//! A commit appends to the log; a checkpoint copies logged pages into the database file, syncs
//! it, and lets the log start over. SQLite runs one itself, by default in the commit that takes
//! the log past 1,000 pages: on the committer thread, between one batch and the next, while
//! every handshake waits. Profiled (`bench/profile.sh`), those checkpoints were a sixth of the
//! committer's time. Here a thread of its own runs a passive checkpoint every
//! [`Checkpointer::EVERY`]: passive, so it never waits for or blocks the writer; the writer's
//! own checkpoints move out to [`WRITER_AUTOCHECKPOINT_PAGES`], a safety net for a checkpointer
//! that falls behind or stopped, not the usual path.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use crate::store::{StoreError, StoreResult};

/// The log size (pages) at which a writer's commit checkpoints after all. With the checkpointer
/// running the log stays far below it; without, the log is bounded at ~40 MB.
pub(super) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Runs passive checkpoints on a thread of its own until dropped.
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// How often: often enough that each checkpoint copies a few hundred pages at most under
    /// load; a checkpoint of an idle log costs a few system calls.
    pub const EVERY: Duration = Duration::from_millis(100);

    /// Opens a connection of its own to the database file at `path` and starts the thread.
    pub(super) fn start(path: &Path, every: Duration) -> StoreResult<Self> {
        let connection = Connection::open(path)?;
        connection.busy_timeout(Duration::from_secs(5))?;
        // The same durability as the writers: the database file is synced before the log is
        // reused.
        connection.pragma_update(None, "synchronous", "FULL")?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&connection, &thread_stop, every))
            .map_err(StoreError::Committer)?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // At most one checkpoint in progress: a short wait.
            let _ = thread.join();
        }
    }
}

fn run(connection: &Connection, stop: &(Mutex<bool>, Condvar), every: Duration) {
    let (stopped, wake) = stop;
    let mut guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let (next, _) = wake
            .wait_timeout(guard, every)
            .unwrap_or_else(|p| p.into_inner());
        guard = next;
        if *guard {
            return;
        }
        drop(guard);
        match checkpoint(connection) {
            // Pages still in the log after the checkpoint: stays small unless readers hold
            // old snapshots for long (a passive checkpoint stops at the oldest).
            Ok(log) => metrics::gauge!("videochat_sqlite_wal_pages").set(log.max(0) as f64),
            Err(error) => tracing::warn!(%error, "SQLite checkpoint failed; trying again"),
        }
        guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
    }
}

/// One passive checkpoint; the pages of the log not yet in the database file.
fn checkpoint(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        let log: i64 = row.get(1)?;
        let copied: i64 = row.get(2)?;
        Ok(log - copied)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `rows` rows, one commit each, through a connection that never checkpoints itself.
    fn write_without_checkpoints(path: &Path, rows: usize) -> Connection {
        let writer = Connection::open(path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer
            .execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)", [])
            .unwrap();
        for i in 0..rows {
            writer
                .execute(
                    "INSERT INTO t (id, v) VALUES (?1, zeroblob(2000))",
                    [i64::try_from(i).unwrap()],
                )
                .unwrap();
        }
        writer
    }

    #[test]
    fn the_log_reaches_the_database_file_without_the_writer_checkpointing() {
        let dir = std::env::temp_dir().join(format!("vc-ckpt-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let _writer = write_without_checkpoints(&path, 500);
        let before = std::fs::metadata(&path).unwrap().len();
        assert!(before < 100_000, "nothing checkpointed yet: {before} bytes");

        let checkpointer = Checkpointer::start(&path, Duration::from_millis(10)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // 500 rows of 2 kB: the database file holds them once the log is copied back.
        while std::fs::metadata(&path).unwrap().len() < 1_000_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the checkpointer never copied the log"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Stopping joins the thread promptly.
        let started = std::time::Instant::now();
        drop(checkpointer);
        assert!(started.elapsed() < Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_database_that_cannot_be_opened_is_an_error_not_a_thread() {
        let missing = std::env::temp_dir()
            .join(format!("vc-ckpt-missing-{}", uuid::Uuid::new_v4().simple()))
            .join("no-such-dir")
            .join("db.sqlite");
        assert!(Checkpointer::start(&missing, Checkpointer::EVERY).is_err());
    }
}
