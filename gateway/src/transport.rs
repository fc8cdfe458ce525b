//! The way the gateway's gRPC calls and its event stream reach the handshake service.
//!
//! Over the network (`VIDEOCHAT_HANDSHAKE_URL`): tonic's balanced HTTP/2 [`Channel`] over the
//! replicas ([`crate::endpoints`]). In one process with the service (`videochat serve`): the
//! service's own gRPC stack — its router, its authentication and observation layers, the
//! generated server of every service — called directly, the way tower services compose. Both
//! are the same kind of thing to the generated clients: a service from HTTP requests carrying
//! gRPC-framed protobuf to HTTP responses carrying the same, so every call, stream, deadline,
//! credential and status goes through the same code either way. What the in-process one leaves
//! out is the HTTP/2 connection between two halves of one process: its framing, its connection
//! tasks, and a loopback TCP exchange for every message in each direction.

use std::convert::Infallible;

use tonic::body::Body;
use tonic::transport::Channel;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

/// What the generated clients are built on. Its error is the network's: a service in this
/// process answers everything, failures included, with a status.
pub type Transport =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, tonic::transport::Error>;

/// Calls over the network, through the balanced channel.
pub fn network(channel: Channel) -> Transport {
    BoxCloneSyncService::new(channel)
}

/// Calls straight into a service's gRPC stack in this process (see the module documentation).
pub fn in_process<S>(service: S) -> Transport
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service.map_err(|never: Infallible| match never {}))
}
