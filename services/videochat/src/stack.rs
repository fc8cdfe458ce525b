//! Assembles the pieces: one service replica, one gateway, or both in one process.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use videochat_gateway::GatewayConfig;
use videochat_handshake::{HandshakeConfig, Listeners, Replica};

use crate::telemetry;

/// Addresses a running stack actually listens on (ports may have been chosen by the OS).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub ws: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

/// A stack whose listeners are bound and whose configuration was checked, ready to run.
pub struct Embedded {
    pub bound: Bound,
    replica: Replica,
    gateway: GatewayConfig,
    ws: TcpListener,
    grpc: TcpListener,
    metrics: TcpListener,
}

impl Embedded {
    /// Binds the three listeners and builds the replica (migrating the store, checking engine
    /// settings), so every start-up error surfaces before anything serves.
    pub async fn bind(gateway: GatewayConfig, handshake: HandshakeConfig) -> anyhow::Result<Self> {
        let ws = TcpListener::bind(gateway.ws_addr).await?;
        let grpc = TcpListener::bind(handshake.grpc_addr).await?;
        let metrics = TcpListener::bind(handshake.metrics_addr).await?;
        let bound = Bound {
            ws: ws.local_addr()?,
            grpc: grpc.local_addr()?,
            metrics: metrics.local_addr()?,
        };
        let replica = Replica::build(handshake).await?;
        Ok(Self {
            bound,
            replica,
            gateway,
            ws,
            grpc,
            metrics,
        })
    }

    /// Serves until `shutdown`: the gateway drains first, then the service stops.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let metrics = telemetry::prometheus();
        let service_stop = CancellationToken::new();
        let service = tokio::spawn(self.replica.run(
            Listeners {
                grpc: self.grpc,
                metrics: Some(self.metrics),
            },
            metrics.clone(),
            service_stop.clone(),
        ));
        let mut gateway = self.gateway;
        gateway.handshake_url = format!("http://{}", self.bound.grpc);
        let gateway_result = videochat_gateway::run(gateway, self.ws, metrics, shutdown).await;
        service_stop.cancel();
        let service_result = service.await?;
        gateway_result?;
        service_result?;
        Ok(())
    }
}

/// The handshake service alone.
pub async fn run_handshake(
    config: HandshakeConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let grpc = TcpListener::bind(config.grpc_addr).await?;
    let metrics = TcpListener::bind(config.metrics_addr).await?;
    let replica = Replica::build(config).await?;
    replica
        .run(
            Listeners {
                grpc,
                metrics: Some(metrics),
            },
            telemetry::prometheus(),
            shutdown,
        )
        .await?;
    Ok(())
}

/// The gateway alone.
pub async fn run_gateway(config: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.ws_addr).await?;
    videochat_gateway::run(config, listener, telemetry::prometheus(), shutdown).await?;
    Ok(())
}
