//! The WebSocket gateway: authenticates sockets, decodes `videochat:*` frames, calls the
//! handshake service over gRPC, and fans the service's events out to every socket of a user.
//! It keeps no handshake state: only which sockets it holds.
//!
//! Where to look: [`envelope`] is the wire protocol, [`connection`] one socket's life,
//! [`server`] the HTTP side, [`upstream`] the client requests to the service (balanced over
//! its replicas and retried on another when one is gone; [`endpoints`] keeps that list), [`link`]
//! the stream that carries presence to the service and events back, [`credentials`] how both
//! prove themselves to the service, [`registry`] the sockets held
//! and the last leg of every event. The defences an outside client meets are [`auth`] (tokens),
//! [`origin`] (browser origins), [`limits`] (connections before and after the upgrade) and
//! [`closing`] (RFC 6455 close codes for protocol violations); `docs/security.md` tells the
//! whole story. [`demo`] is the development-only browser demo.

pub mod auth;
pub mod closing;
pub mod config;
pub mod connection;
pub mod credentials;
pub mod demo;
pub mod endpoints;
pub mod envelope;
pub mod error;
pub mod frames;
pub mod limits;
pub mod link;
pub mod origin;
pub mod registry;
pub mod resume;
pub mod server;
pub mod state;
pub mod transport;
pub mod upstream;
pub mod webhooks;

pub use config::GatewayConfig;
pub use server::{GatewayError, run, run_in_process};
pub use transport::Transport;
