//! Readies a new connection for the hot path before its first handshake.
//!
//! A Postgres session parses and plans each statement the first time it runs it, and opens the
//! catalog entries of every table and index it names. Measured with Postgres's statement log at
//! 500 handshakes/s right after a start (`log_min_duration_statement = 0`), a connection's first
//! use of each hot statement took 1–3 ms more than its later ones: ~10 ms per connection over
//! its first handshakes, which made the first ~60 ms after every start (and after every
//! reconnect) a burst of slow rings. Running each statement once over no rows, when the
//! connection opens, pays that before any handshake waits on it, and writes nothing.

use sqlx::PgConnection;

use super::{MARK_SEEN, apply, load};
use crate::store::StoreResult;

/// Runs the hot statements once over no rows on `connection`: every kind of load, the common
/// shapes of the write, and the gateway's report of what it delivered.
pub(super) async fn warm(connection: &mut PgConnection, origin: &str) -> StoreResult<()> {
    load::warm(connection).await?;
    apply::warm(connection, origin).await?;
    sqlx::query(MARK_SEEN)
        .bind(Vec::<&str>::new())
        .bind(Vec::<i64>::new())
        .execute(&mut *connection)
        .await?;
    Ok(())
}
