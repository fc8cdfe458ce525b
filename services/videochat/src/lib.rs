//! The `videochat` binary's library side: command line, telemetry set-up, the assembly of
//! gateway and service (shared by `main` and the integration tests), and the command-line client.

pub mod allocator;
pub mod cli;
pub mod client;
pub mod production;
pub mod stack;
pub mod telemetry;
