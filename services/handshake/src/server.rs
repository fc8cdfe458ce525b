//! Runs a handshake service replica: store, engines, gRPC, metrics and background tasks, until
//! the shutdown token fires.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::HandshakeConfig;
use crate::delivery::{self, Hub, link::Links};
use crate::engine::events::EventSources;
use crate::engine::{EngineError, Engines};
use crate::service::Handshake;
use crate::store::{self, StoreError};
use crate::webhooks::handoff::Handoff;
use crate::webhooks::{WebhookConfigError, WebhookSettings, dispatcher, sender::Sender};
use crate::{grpc, housekeeping, metrics_http};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("metrics server failed: {0}")]
    Metrics(#[source] std::io::Error),
    #[error(transparent)]
    Access(#[from] grpc::AccessError),
    #[error(transparent)]
    Webhooks(#[from] WebhookConfigError),
}

/// Listeners the replica serves on; bound by the caller so tests can use port 0.
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: Option<TcpListener>,
}

/// Everything ready to serve: built first so that configuration errors surface at start-up.
pub struct Replica {
    handshake: Handshake,
    links: Links,
    grpc: grpc::Grpc,
    /// Ends the gateways' event streams when the replica shuts down.
    streams_end: CancellationToken,
    config: HandshakeConfig,
    /// The webhook dispatcher's parts, when webhooks are configured.
    webhooks: Option<(WebhookSettings, Sender, dispatcher::Wakes)>,
}

impl Replica {
    /// Checks the engine and access settings and opens (and migrates) the store.
    pub async fn build(config: HandshakeConfig) -> Result<Self, StartError> {
        let access = grpc::Access::from_config(&config)?;
        let webhook_settings = WebhookSettings::from_config(&config.webhooks)?;
        let sender = webhook_settings.as_ref().map(Sender::new).transpose()?;
        let engines = Arc::new(Engines::from_config(&config.engines)?);
        // Names this replica in the outbox, so that its follower skips what it pushed itself.
        let replica_id = format!("replica_{}", uuid::Uuid::now_v7().simple());
        let store =
            store::connect(&config.database_url, config.db_max_connections, &replica_id).await?;
        tracing::info!(
            backend = store.backend(),
            database = %config.redacted_database_url(),
            engine = %engines.default_kind(),
            replica = %replica_id,
            "handshake store ready"
        );
        let hub = Arc::new(Hub::default());
        let handshake = Handshake::new(
            store.clone(),
            engines,
            hub.clone(),
            config.ring_timeout(),
            config.limits(),
        )
        .receiving(EventSources::from_config(&config.engines));
        let (handshake, webhooks) = match (webhook_settings, sender) {
            (Some(settings), Some(sender)) => {
                tracing::info!(
                    call_endpoints = settings.routes.call_endpoints.len(),
                    push = settings.routes.push_enabled(),
                    "webhooks on"
                );
                let wake = Arc::new(tokio::sync::Notify::new());
                let (handoff, committed) = Handoff::new(
                    settings.routes.clone(),
                    wake.clone(),
                    dispatcher::lease(&settings),
                );
                (
                    handshake.with_webhooks(handoff),
                    Some((settings, sender, dispatcher::Wakes { wake, committed })),
                )
            }
            _ => (handshake, None),
        };
        let links = Links {
            store,
            hub,
            lease: config.presence_lease(),
            replica_id,
            max_sockets_per_user: config.max_sockets_per_user_cluster,
        };
        let streams_end = CancellationToken::new();
        let grpc = grpc::Grpc::new(
            access,
            handshake.clone(),
            links.clone(),
            streams_end.clone(),
        )
        .await;
        Ok(Self {
            handshake,
            links,
            grpc,
            streams_end,
            config,
            webhooks,
        })
    }

    pub fn handshake(&self) -> &Handshake {
        &self.handshake
    }

    /// This replica's gRPC services for a gateway in the same process to call directly (the
    /// same services and layers as the port; see `videochat serve`).
    pub fn in_process(&self) -> grpc::InProcess {
        self.grpc.in_process()
    }

    /// Serves until `shutdown`; background tasks stop with it.
    pub async fn run(
        self,
        listeners: Listeners,
        metrics: PrometheusHandle,
        shutdown: CancellationToken,
    ) -> Result<(), StartError> {
        let tasks = tokio_util::task::TaskTracker::new();
        tasks.spawn(housekeeping::expire_rings(
            self.handshake.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(delivery::follower::run(
            self.links.store.clone(),
            self.links.hub.clone(),
            self.config.outbox_poll(),
            shutdown.clone(),
        ));
        tasks.spawn(housekeeping::sweep(
            self.handshake.clone(),
            std::time::Duration::from_secs(self.config.outbox_retention_s),
            std::time::Duration::from_secs(self.config.history_retention_s),
            shutdown.clone(),
        ));
        if let Some((settings, sender, wakes)) = self.webhooks {
            tasks.spawn(dispatcher::run(
                self.links.store.clone(),
                settings,
                sender,
                wakes,
                shutdown.clone(),
            ));
        }
        if let Some(listener) = listeners.metrics {
            tasks.spawn(metrics_http::serve(listener, metrics, shutdown.clone()));
        }
        let streams_end = self.streams_end.clone();
        let stopping = shutdown.clone();
        tasks.spawn(async move {
            stopping.cancelled().await;
            streams_end.cancel();
        });
        tasks.close();
        let served = self.grpc.serve(listeners.grpc, shutdown.clone()).await;
        shutdown.cancel();
        tasks.wait().await;
        Ok(served?)
    }
}
