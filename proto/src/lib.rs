//! Generated gRPC types and stubs for `videochat.handshake.v1`.
//!
//! These types are the RPC contract only: the gateway's JSON frames and the service's domain
//! types are separate and converted at the edges, so the wire and the RPC can change apart.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod v1 {
    tonic::include_proto!("videochat.handshake.v1");

    /// Encoded `FileDescriptorSet`, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/handshake_descriptor.bin"));

    /// The `ErrorInfo.domain` of application errors.
    pub const ERROR_DOMAIN: &str = "videochat.handshake.v1";
}
