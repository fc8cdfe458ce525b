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
        let (mut gateway, handshake) = embed(gateway, handshake);
        let ws = bind_websocket(gateway.ws_addr)?;
        let grpc = TcpListener::bind(handshake.grpc_addr).await?;
        let metrics = TcpListener::bind(handshake.metrics_addr).await?;
        let bound = Bound {
            ws: ws.local_addr()?,
            grpc: grpc.local_addr()?,
            metrics: metrics.local_addr()?,
        };
        // The embedded gateway calls the service in this process (`run` below); the URL only
        // names, in its logs and settings, the port other gateways and services reach.
        let scheme = if handshake.grpc_tls() {
            "https"
        } else {
            "http"
        };
        gateway.handshake_url = format!("{scheme}://{}", bound.grpc);
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

    /// The replica's gRPC stack as the embedded gateway calls it: in this process, behind the
    /// same authentication and observation layers as the port (tests call it directly too).
    pub fn in_process(&self) -> videochat_gateway::Transport {
        videochat_gateway::transport::in_process(self.replica.in_process())
    }

    /// Serves until `shutdown`: the gateway drains first, then the service stops.
    ///
    /// The gateway reaches the service in this process: its calls and its event stream go
    /// straight into the replica's gRPC stack (`videochat_gateway::transport`), not over a
    /// loopback HTTP/2 connection, which cost `serve` about a fifth of its CPU per handshake.
    /// The gRPC port still serves everyone else: internal services, other gateways.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let metrics = telemetry::prometheus();
        let in_process = self.in_process();
        let service_stop = CancellationToken::new();
        let service = tokio::spawn(self.replica.run(
            Listeners {
                grpc: self.grpc,
                metrics: Some(self.metrics),
            },
            metrics.clone(),
            service_stop.clone(),
        ));
        let gateway_result =
            videochat_gateway::run_in_process(self.gateway, self.ws, metrics, shutdown, in_process)
                .await;
        service_stop.cancel();
        let service_result = service.await?;
        gateway_result?;
        service_result?;
        Ok(())
    }
}

/// The configuration of `serve`: the embedded gateway gets a credential of its own, made
/// afresh at every start and known only to this process, and the service accepts it beside any
/// gateway credentials configured (for other gateways). So `serve` needs no gRPC settings, yet
/// nothing else that reaches the loopback port can attach as a gateway. Internal services
/// still need `VIDEOCHAT_GRPC_SERVICE_TOKENS`.
pub fn embed(
    mut gateway: GatewayConfig,
    mut handshake: HandshakeConfig,
) -> (GatewayConfig, HandshakeConfig) {
    // Two v4 UUIDs: 244 random bits from the OS generator, printable as a header value.
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    handshake
        .grpc_gateway_tokens
        .push(videochat_handshake::config::Secret::from(token.clone()));
    gateway.grpc_token = Some(token);
    (gateway, handshake)
}

/// Connections a WebSocket listener lets wait for `accept`. When thousands of clients reconnect
/// at once (a gateway restart), the default of 1,024 overflows and the kernel drops SYNs, which
/// clients retry a second later; the kernel caps this at `net.core.somaxconn` anyway.
const WEBSOCKET_BACKLOG: u32 = 8192;

/// The gateway's listener, with a backlog deep enough for reconnect storms.
fn bind_websocket(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(WEBSOCKET_BACKLOG)
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
    let listener = bind_websocket(config.ws_addr)?;
    videochat_gateway::run(config, listener, telemetry::prometheus(), shutdown).await?;
    Ok(())
}
