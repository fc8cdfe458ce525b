//! The `videochat` binary's library side: command line, telemetry set-up, and the assembly of
//! gateway and service, shared by `main` and the integration tests.

pub mod cli;
pub mod production;
pub mod stack;
pub mod telemetry;
