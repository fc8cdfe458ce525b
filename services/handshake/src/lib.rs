//! The handshake service: owns users, rings, videochats, presence, idempotency records and the
//! event outbox, and serves them over gRPC.
//!
//! Where to look: [`machine`] is the state machine (CONTRACT §4), [`store`] the persistence
//! (Postgres and SQLite), [`engine`] the media engines' credentials, [`grpc`] the RPC surface,
//! [`service`] the glue that runs a command in a transaction with idempotency and the outbox.

pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod grpc;
pub mod housekeeping;
pub mod machine;
mod metrics_http;
pub mod server;
pub mod service;
pub mod store;

pub use config::HandshakeConfig;
pub use error::{ErrorCode, HandshakeError};
pub use server::{Listeners, Replica, StartError};
