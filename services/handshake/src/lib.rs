//! The handshake service: owns users, rings, videochats, presence, idempotency records and the
//! event outbox, and serves them over gRPC.
//!
//! Where to look: [`machine`] is the state machine (CONTRACT §4), deciding on the [`change::Facts`]
//! the [`store`] loads and returning the [`change::Change`] it writes (Postgres and SQLite);
//! [`delivery`] is the story of an event from its commit to a gateway; [`engine`] the media
//! engines' credentials; [`grpc`] the RPC surface; [`service`] the glue that runs an operation
//! as load → decide → write with idempotency and retries ([`ringing`]: the accepts it decides
//! without a load).

pub mod change;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod history;
pub mod housekeeping;
pub mod machine;
mod metrics_http;
mod ringing;
pub mod server;
pub mod service;
pub mod store;
pub mod webhooks;

pub use config::HandshakeConfig;
pub use error::{ErrorCode, HandshakeError};
pub use server::{Listeners, Replica, StartError};
