//! The gRPC surface of the service: the three services of `videochat.handshake.v1`, the
//! standard health service, and server reflection (v1 and v1alpha, if enabled) — behind
//! [`auth`], which admits each caller in its role, and optionally TLS or mutual TLS.

pub mod auth;
pub(crate) mod convert;
mod engine_events;
mod gateway_link;
mod handshake;
mod observe;
pub mod status;
mod users;
mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::server::HealthReporter;
use tower::Layer;
use videochat_proto::v1::{
    FILE_DESCRIPTOR_SET, engine_events_server::EngineEventsServer,
    gateway_link_server::GatewayLinkServer, handshake_server::HandshakeServer,
    user_directory_server::UserDirectoryServer, webhook_deliveries_server::WebhookDeliveriesServer,
};

use crate::config::HandshakeConfig;
use crate::delivery::link::Links;
use crate::service::Handshake;
use observe::{Observe, ObserveLayer};

pub use engine_events::EngineEventsApi;
pub use gateway_link::GatewayLinkApi;
pub use handshake::HandshakeApi;
pub use users::UserDirectoryApi;
pub use webhooks::WebhookDeliveriesApi;

/// How the gRPC port admits callers: built from the configuration at start-up, so that a
/// missing credential or an unreadable certificate stops the replica before it serves.
pub struct Access {
    pub policy: Arc<auth::Policy>,
    pub reflection: bool,
    pub tls: Option<ServerTlsConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "internal gRPC authentication is required (VIDEOCHAT_GRPC_AUTH=required, the default) \
         but no credential is configured: set VIDEOCHAT_GRPC_GATEWAY_TOKENS (and the same value \
         as VIDEOCHAT_GRPC_TOKEN on the gateways) and/or VIDEOCHAT_GRPC_SERVICE_TOKENS; or \
         VIDEOCHAT_GRPC_AUTH=none for a development run on a trusted host"
    )]
    NoCredentials,
    #[error(
        "VIDEOCHAT_GRPC_TLS_CERT_FILE and VIDEOCHAT_GRPC_TLS_KEY_FILE go together \
         (VIDEOCHAT_GRPC_TLS_CLIENT_CA_FILE needs both)"
    )]
    TlsIncomplete,
    #[error("cannot read {setting} ({path}): {source}")]
    File {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Access {
    pub fn from_config(config: &HandshakeConfig) -> Result<Self, AccessError> {
        let policy = auth::Policy::from_config(config);
        if !policy.accepts_anyone() {
            return Err(AccessError::NoCredentials);
        }
        let tls = match (
            &config.grpc_tls_cert_file,
            &config.grpc_tls_key_file,
            &config.grpc_tls_client_ca_file,
        ) {
            (None, None, None) => None,
            (Some(cert), Some(key), client_ca) => {
                let identity = Identity::from_pem(
                    read("VIDEOCHAT_GRPC_TLS_CERT_FILE", cert)?,
                    read("VIDEOCHAT_GRPC_TLS_KEY_FILE", key)?,
                );
                let mut tls = ServerTlsConfig::new().identity(identity);
                if let Some(ca) = client_ca {
                    tls = tls.client_ca_root(Certificate::from_pem(read(
                        "VIDEOCHAT_GRPC_TLS_CLIENT_CA_FILE",
                        ca,
                    )?));
                }
                Some(tls)
            }
            _ => return Err(AccessError::TlsIncomplete),
        };
        Ok(Self {
            policy: Arc::new(policy),
            reflection: config.grpc_reflection,
            tls,
        })
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, AccessError> {
    std::fs::read(path).map_err(|source| AccessError::File {
        setting,
        path: path.to_owned(),
        source,
    })
}

/// The gRPC services of one replica, built once: the TCP server serves them, and a gateway in
/// the same process (`videochat serve`) calls them directly ([`Grpc::in_process`]).
pub struct Grpc {
    routes: Routes,
    policy: Arc<auth::Policy>,
    tls: Option<ServerTlsConfig>,
    health: HealthReporter,
}

/// A replica's gRPC stack as a tower service: the router behind the same authentication and
/// observation layers as the port's (see the gateway's `transport` module).
pub type InProcess = Observe<auth::Authorize<Routes>>;

impl Grpc {
    /// Every service of the port; `GatewayLink` streams end when `streams_end` fires.
    pub async fn new(
        access: Access,
        handshake: Handshake,
        links: Links,
        streams_end: CancellationToken,
    ) -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<HandshakeServer<HandshakeApi>>().await;
        health
            .set_serving::<UserDirectoryServer<UserDirectoryApi>>()
            .await;
        health
            .set_serving::<GatewayLinkServer<GatewayLinkApi>>()
            .await;
        health
            .set_serving::<WebhookDeliveriesServer<WebhookDeliveriesApi>>()
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
        let mut routes = Routes::builder();
        routes
            .add_service(health_service)
            .add_service(HandshakeServer::new(HandshakeApi::new(handshake.clone())))
            .add_service(UserDirectoryServer::new(UserDirectoryApi::new(
                handshake.clone(),
            )))
            .add_service(EngineEventsServer::new(EngineEventsApi::new(
                handshake.clone(),
            )))
            .add_service(GatewayLinkServer::new(GatewayLinkApi::new(
                links,
                streams_end,
            )))
            .add_service(WebhookDeliveriesServer::new(WebhookDeliveriesApi::new(
                handshake,
            )));
        if access.reflection {
            if let Ok(v1) = reflection_v1 {
                routes.add_service(v1);
            }
            if let Ok(v1alpha) = reflection_v1alpha {
                routes.add_service(v1alpha);
            }
        }
        Self {
            routes: routes.routes().prepare(),
            policy: access.policy,
            tls: access.tls,
            health,
        }
    }

    /// The services behind the port's own layers, to be called in this process.
    pub fn in_process(&self) -> InProcess {
        ObserveLayer.layer(auth::AuthLayer::new(self.policy.clone()).layer(self.routes.clone()))
    }

    /// Serves on `listener` until `shutdown`, then drains in-flight calls.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let health = self.health;
        let mut server = builder
            // Outermost, so refused calls are traced and timed too.
            .layer(ObserveLayer)
            .layer(auth::AuthLayer::new(self.policy))
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)));
        server
            .add_routes(self.routes)
            .serve_with_incoming_shutdown(incoming(listener), async move {
                shutdown.cancelled().await;
                health
                    .set_not_serving::<HandshakeServer<HandshakeApi>>()
                    .await;
            })
            .await
    }
}

/// Accepted connections with Nagle's algorithm off: events stream as small HTTP/2 frames, and
/// with Nagle on each would wait for the peer's delayed ACK (~40 ms).
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)))
}
