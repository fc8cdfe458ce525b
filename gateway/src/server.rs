//! The gateway's HTTP server: `/ws` (authenticated WebSocket upgrade), `/healthz`, `/readyz`
//! and `/metrics` on one port. Reads top-down as in mini-redis: cap connections with a
//! semaphore, back off on accept errors, stop on the shutdown token, drain sockets.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthConfigError, Authenticator, token_from_request};
use crate::config::GatewayConfig;
use crate::connection::{self, Session, Ws};
use crate::credentials::{self, Credential, CredentialError};
use crate::demo;
use crate::endpoints::Endpoints;
use crate::error::WireCode;
use crate::limits::{self, Limit, PendingUpgrades};
use crate::link::{Link, LinkError, now_ms};
use crate::origin::{OriginError, OriginPolicy};
use crate::registry::Registry;
use crate::resume;
use crate::state::Shared;
use crate::transport::{self, Transport};
use crate::upstream::{self, Upstream};
use crate::webhooks;

/// Bytes a socket reads from the network at a time. Client frames are small; a larger one is
/// read in several steps. Most of an idle socket's memory is this buffer.
const READ_BUFFER: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error("invalid VIDEOCHAT_HANDSHAKE_URL: {0}")]
    Upstream(#[from] crate::endpoints::EndpointsError),
    #[error("invalid VIDEOCHAT_ALLOWED_ORIGINS: {0}")]
    Origins(#[from] OriginError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
}

/// Serves until `shutdown`, then closes every socket (1012) and returns within the drain
/// deadline. The handshake service is reached over the network, at `VIDEOCHAT_HANDSHAKE_URL`.
pub async fn run(
    config: GatewayConfig,
    listener: TcpListener,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    serve(config, listener, metrics, shutdown, None).await
}

/// [`run`] for a gateway in the same process as its handshake service (`videochat serve`):
/// calls and the event stream go straight into the service's gRPC stack (see
/// [`crate::transport`]); `VIDEOCHAT_HANDSHAKE_URL` is not used.
pub async fn run_in_process(
    config: GatewayConfig,
    listener: TcpListener,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
    service: Transport,
) -> Result<(), GatewayError> {
    serve(config, listener, metrics, shutdown, Some(service)).await
}

async fn serve(
    config: GatewayConfig,
    listener: TcpListener,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
    in_process: Option<Transport>,
) -> Result<(), GatewayError> {
    if config.uses_dev_secret() {
        tracing::warn!(
            "!!! VIDEOCHAT_JWT_SECRET is the public development secret: anyone can mint tokens. \
             Set VIDEOCHAT_JWT_SECRET, VIDEOCHAT_JWT_PUBLIC_KEY_FILE or VIDEOCHAT_JWKS_FILE in production !!!"
        );
    }
    let auth = Authenticator::from_config(&config)?;
    let origins = OriginPolicy::parse(&config.allowed_origins)?;
    let gateway_id = format!("gw_{}", uuid::Uuid::now_v7().simple());
    let credential = Credential::from_config(&config)?;
    if !credential.is_set() {
        tracing::warn!(
            "VIDEOCHAT_GRPC_TOKEN is not set: the handshake service refuses this gateway unless \
             it runs with VIDEOCHAT_GRPC_AUTH=none"
        );
    }
    let (transport, endpoints, discovery) = match in_process {
        Some(service) => (service, Endpoints::in_process(), None),
        None => {
            let (channel, endpoints, discovery) = upstream::channel(
                &config.handshake_url,
                credentials::tls(&config)?,
                config.handshake_refresh(),
            )?;
            (transport::network(channel), endpoints, Some(discovery))
        }
    };
    let channel = credential.attach(transport);
    let upstream = Upstream::new(channel.clone(), endpoints, config.rpc_timeout());
    let registry = Arc::new(Registry::default());
    let link = Arc::new(Link::new(
        channel,
        gateway_id.clone(),
        registry.clone(),
        config.rpc_timeout(),
    ));
    let (ready_tx, ready) = watch::channel(false);
    let tasks = TaskTracker::new();
    // Sockets are closed by their own tasks on `shutdown`; the link outlives them a little so
    // that their closes still reach the service.
    let link_stop = CancellationToken::new();
    tasks.spawn(link.clone().run(ready_tx, link_stop.clone()));
    if let Some(discovery) = discovery {
        tasks.spawn(discovery.run(link_stop.clone()));
    }
    tasks.spawn(auth.watch_jwks(config.jwks_reload(), shutdown.clone()));
    let pending_upgrades = PendingUpgrades::new(config.max_pending_upgrades);
    let http1 = limits::http1_builder(&config);

    let shared = Arc::new(Shared {
        sockets: Arc::new(Semaphore::new(config.max_connections)),
        config,
        upstream,
        link,
        registry,
        shutdown: shutdown.clone(),
        auth,
        origins,
        ready,
        metrics,
    });
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, %gateway_id, "gateway listening");
    if shared.config.uses_dev_secret() {
        tracing::info!(url = %format!("http://{addr}/"), "browser demo (development secret only)");
    }

    let connections = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Held until the HTTP phase ends (upgrade or close); see `limits`.
        let Some(pending) = pending_upgrades.try_admit() else {
            limits::refuse_at_accept(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tracker = connections.clone();
        let http1 = http1.clone();
        connections.spawn(async move {
            let _pending = pending;
            let service = service_fn(move |request| {
                let shared = shared.clone();
                let tracker = tracker.clone();
                async move { Ok::<_, Infallible>(route(request, shared, tracker).await) }
            });
            if let Err(error) = http1
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                limits::note_connection_error(&error);
                tracing::debug!(%error, "http connection ended");
            }
        });
    }

    // Drain: stop accepting, let socket tasks send their close frames, give up at the deadline.
    tracing::info!(sockets = shared.registry.socket_count(), "gateway draining");
    connections.close();
    if tokio::time::timeout(shared.config.drain_timeout(), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed with sockets still open");
    }
    link_stop.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

async fn route(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/ws" => upgrade(request, shared, tracker).await,
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if *shared.ready.borrow() && !shared.shutdown.is_cancelled() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let mut response = text(StatusCode::OK, &shared.metrics.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        path if webhooks::handles(path) => webhooks::route(request, &shared.upstream).await,
        // The browser demo hands out tokens: only while the development secret is in use.
        path if demo::handles(path) && shared.config.uses_dev_secret() => {
            demo::route(request, &shared.config, &shared.registry).await
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Authenticates, registers the socket with the service (so the user is available the moment
/// the client sees the socket open), then switches protocols.
async fn upgrade(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) -> Response<Full<Bytes>> {
    if shared.shutdown.is_cancelled() || !*shared.ready.borrow() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "gateway not ready\n");
    }
    if !shared.origins.allows(request.headers().get(header::ORIGIN)) {
        limits::hit(Limit::Origin);
        return text(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let principal = match token_from_request(&request).map(|t| shared.auth.authenticate(&t)) {
        Some(Ok(principal)) => principal,
        Some(Err(error)) => {
            tracing::info!(%error, "upgrade refused");
            metrics::counter!("videochat_gateway_auth_failures_total").increment(1);
            return unauthorized("invalid token\n");
        }
        None => {
            metrics::counter!("videochat_gateway_auth_failures_total").increment(1);
            return unauthorized("missing token\n");
        }
    };
    let resume_after = match resume::last_event_id(request.uri().query()) {
        Ok(resume_after) => resume_after,
        Err(error) => return text(StatusCode::BAD_REQUEST, &format!("{error}\n")),
    };
    let Some(accept_key) = websocket_accept_key(&request) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (version 13)\n",
        );
    };
    let Ok(permit) = shared.sockets.clone().try_acquire_owned() else {
        limits::hit(Limit::MaxConnections);
        return text(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
    };

    let connection_id = format!("conn_{}", uuid::Uuid::now_v7().simple());
    let (socket, sockets_of_user) = shared.registry.open(&principal.user_id, &connection_id);
    // Counted after adding, so two concurrent upgrades cannot both slip under the cap.
    if sockets_of_user > shared.config.max_sockets_per_user {
        shared.registry.close(&socket);
        limits::hit(Limit::SocketsPerUser);
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "too many sockets for this user\n",
        );
    }
    let registered = match shared
        .link
        .register(&socket, principal.profile, resume_after)
        .await
    {
        Ok(registered) => registered,
        Err(error) => {
            let delivered = shared.registry.close(&socket);
            shared
                .link
                .forget(&connection_id, &principal.user_id, delivered)
                .await;
            if let LinkError::TooManySockets(reason) = &error {
                tracing::info!(%reason, "upgrade refused");
                limits::hit(Limit::SocketsPerUserCluster);
                return text(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "too many sockets for this user across the service ({})\n",
                        WireCode::TooManySockets.as_i32()
                    ),
                );
            }
            tracing::warn!(%error, "cannot register socket with the service");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "handshake service unavailable\n",
            );
        }
    };
    let replay = resume::owed_frames(
        &registered.missed,
        registered.resync.as_ref(),
        &registered.rings,
        registered.missed_calls.as_ref(),
        now_ms(),
    );
    shared.registry.registered(
        &socket,
        registered.last_seq,
        registered
            .rings
            .into_iter()
            .map(|r| r.videochat_request_id)
            .collect(),
    );
    metrics::histogram!("videochat_gateway_sockets_per_user").record(sockets_of_user as f64);
    metrics::gauge!("videochat_gateway_open_sockets").increment(1.0);

    let session = Session { socket, replay };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(shared.config.max_message_bytes))
        .max_frame_size(Some(shared.config.max_message_bytes));
    let on_upgrade = hyper::upgrade::on(request);
    let task_shared = shared.clone();
    tracker.spawn(async move {
        let _permit = permit;
        let ws = match on_upgrade.await {
            Ok(upgraded) => websocket(upgraded, ws_config).await,
            Err(error) => {
                tracing::info!(%error, "upgrade did not complete");
                None
            }
        };
        match ws {
            Some(ws) => connection::run(ws, session, task_shared).await,
            None => {
                let delivered = task_shared.registry.close(&session.socket);
                metrics::gauge!("videochat_gateway_open_sockets").decrement(1.0);
                task_shared
                    .link
                    .forget(
                        &session.socket.connection_id,
                        &session.socket.user_id,
                        delivered,
                    )
                    .await;
            }
        }
    });

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(value) = header::HeaderValue::from_str(&accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// The WebSocket over the upgraded connection. Unwraps hyper's connection back to the TCP
/// stream, so the socket keeps no HTTP buffers and no boxed I/O for its whole life.
async fn websocket(upgraded: hyper::upgrade::Upgraded, config: WebSocketConfig) -> Option<Ws> {
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let stream = parts.io.into_inner();
            let ws = if parts.read_buf.is_empty() {
                WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await
            } else {
                WebSocketStream::from_partially_read(
                    stream,
                    parts.read_buf.to_vec(),
                    Role::Server,
                    Some(config),
                )
                .await
            };
            Some(ws)
        }
        Err(_) => {
            tracing::error!("upgraded connection is not a TCP stream");
            None
        }
    }
}

fn websocket_accept_key<B>(request: &Request<B>) -> Option<String> {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    if request.method() != http::Method::GET
        || !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
        || headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .and_then(|v| v.to_str().ok())
            != Some("13")
    {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    Some(derive_accept_key(key.as_bytes()))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}

fn unauthorized(body: &str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::UNAUTHORIZED, body);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
