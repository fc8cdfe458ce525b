//! The gRPC surface of the service: the three services of `videochat.handshake.v1`, the
//! standard health service, and server reflection (v1 and v1alpha).

pub(crate) mod convert;
mod gateway_link;
mod handshake;
mod observe;
pub mod status;
mod users;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use videochat_proto::v1::{
    FILE_DESCRIPTOR_SET, gateway_link_server::GatewayLinkServer, handshake_server::HandshakeServer,
    user_directory_server::UserDirectoryServer,
};

use crate::delivery::link::Links;
use crate::service::Handshake;

pub use gateway_link::GatewayLinkApi;
pub use handshake::HandshakeApi;
pub use users::UserDirectoryApi;

/// Serves gRPC on `listener` until `shutdown`, then drains in-flight calls.
pub async fn serve(
    listener: TcpListener,
    handshake: Handshake,
    links: Links,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<HandshakeServer<HandshakeApi>>()
        .await;
    health_reporter
        .set_serving::<UserDirectoryServer<UserDirectoryApi>>()
        .await;
    health_reporter
        .set_serving::<GatewayLinkServer<GatewayLinkApi>>()
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| {
            tracing::error!(error = %e, "reflection v1 unavailable");
            e
        });
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| {
            tracing::error!(error = %e, "reflection v1alpha unavailable");
            e
        });

    let stream_shutdown = shutdown.clone();
    let router = tonic::transport::Server::builder()
        .layer(observe::ObserveLayer)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(HandshakeServer::new(HandshakeApi::new(handshake.clone())))
        .add_service(UserDirectoryServer::new(UserDirectoryApi::new(
            handshake.clone(),
        )))
        .add_service(GatewayLinkServer::new(GatewayLinkApi::new(
            links,
            stream_shutdown,
        )))
        .add_optional_service(reflection_v1.ok())
        .add_optional_service(reflection_v1alpha.ok());

    router
        .serve_with_incoming_shutdown(incoming(listener), async move {
            shutdown.cancelled().await;
            health_reporter
                .set_not_serving::<HandshakeServer<HandshakeApi>>()
                .await;
        })
        .await
}

/// Accepted connections with Nagle's algorithm off: events stream as small HTTP/2 frames, and
/// with Nagle on each would wait for the peer's delayed ACK (~40 ms).
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)))
}
