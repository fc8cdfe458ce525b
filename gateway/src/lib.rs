//! The WebSocket gateway: authenticates sockets, decodes `videochat:*` frames, calls the
//! handshake service over gRPC, and fans the service's events out to every socket of a user.
//! It keeps no handshake state: only which sockets it holds.
//!
//! Where to look: [`envelope`] is the wire protocol, [`connection`] one socket's life,
//! [`server`] the HTTP side, [`upstream`] the gRPC side, [`demo`] the development-only browser
//! demo.

pub mod auth;
pub mod config;
pub mod connection;
pub mod demo;
pub mod envelope;
pub mod error;
pub mod frames;
pub mod registry;
pub mod server;
pub mod upstream;

pub use config::GatewayConfig;
pub use server::{GatewayError, run};
