//! The gateway's link to the handshake service: one `GatewayLink/Attach` stream that carries
//! presence out (sockets opened and closed, heartbeats) and events in.
//!
//! A socket is shown to its client only after the service confirmed it on this stream
//! ([`Link::register`]), so a user is available the moment their socket is open. The stream
//! reattaches by itself after any failure, stating every socket held here and, per user, the
//! last event position delivered: the service replaces what it believed about this gateway and
//! sends again whatever was committed meanwhile. [`crate::registry`] drops what arrives twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use videochat_proto::v1 as pb;
use videochat_proto::v1::gateway_link_client::GatewayLinkClient;

use crate::credentials::ToService;
use crate::envelope;
use crate::frames;
use crate::registry::{EventFrame, Registry, Socket};

/// Presence messages queued towards the service.
const OUTGOING_BUFFER: usize = 4096;
/// How often delivered positions are reported (when they moved): a user's next socket is not
/// sent again what another socket of the user was delivered more than this long ago.
const REPORT_DELIVERED_EVERY: Duration = Duration::from_millis(100);

/// What the service said about a newly opened socket.
#[derive(Debug)]
pub struct Registered {
    /// The user's newest event position at registration: the socket gets the ones after it.
    pub last_seq: u64,
    /// The rings ringing for the user, to show at once.
    pub rings: Vec<pb::VideochatRequested>,
    /// The user's events the socket is owed from before `last_seq`, in order.
    pub missed: Vec<pb::Event>,
    /// A snapshot instead, when those events are gone.
    pub resync: Option<pb::Resync>,
    /// Calls the user missed since they last listed them.
    pub missed_calls: Option<pb::MissedCalls>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("not attached to the handshake service")]
    Detached,
    #[error("the handshake service did not confirm the socket in time")]
    Timeout,
    #[error("the handshake service refused the socket: {0}")]
    Refused(String),
    #[error("the handshake service refused the socket: {0}")]
    TooManySockets(String),
}

type Waiters = HashMap<String, oneshot::Sender<Result<Registered, LinkError>>>;

pub struct Link {
    client: GatewayLinkClient<ToService>,
    gateway_id: String,
    registry: Arc<Registry>,
    /// The current attachment's outgoing messages; `None` while detached.
    outgoing: Mutex<Option<mpsc::Sender<pb::GatewayMessage>>>,
    /// Sockets waiting for the service's confirmation, by connection id.
    waiting: Mutex<Waiters>,
    /// Closed sockets waiting for the service to forget them, by connection id.
    forgetting: Mutex<HashMap<String, oneshot::Sender<()>>>,
    register_timeout: Duration,
}

impl Link {
    pub fn new(
        channel: ToService,
        gateway_id: String,
        registry: Arc<Registry>,
        register_timeout: Duration,
    ) -> Self {
        Self {
            client: GatewayLinkClient::new(channel),
            gateway_id,
            registry,
            outgoing: Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
            forgetting: Mutex::new(HashMap::new()),
            register_timeout,
        }
    }

    fn outgoing(&self) -> Option<mpsc::Sender<pb::GatewayMessage>> {
        self.outgoing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports an opened socket and waits for the service to record it.
    pub async fn register(
        &self,
        socket: &Socket,
        profile: pb::UserPatch,
        resume_after: Option<u64>,
    ) -> Result<Registered, LinkError> {
        let outgoing = self.outgoing().ok_or(LinkError::Detached)?;
        let (done, confirmed) = oneshot::channel();
        self.waiting().insert(socket.connection_id.clone(), done);
        let opened = pb::GatewayMessage {
            kind: Some(pb::gateway_message::Kind::SocketOpened(pb::SocketOpened {
                connection_id: socket.connection_id.clone(),
                user_id: socket.user_id.clone(),
                profile: Some(profile),
                resume_after,
            })),
        };
        if outgoing.send(opened).await.is_err() {
            self.waiting().remove(&socket.connection_id);
            return Err(LinkError::Detached);
        }
        match tokio::time::timeout(self.register_timeout, confirmed).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(LinkError::Detached),
            Err(_) => {
                self.waiting().remove(&socket.connection_id);
                Err(LinkError::Timeout)
            }
        }
    }

    /// Reports a closed socket and waits (up to the registration deadline) until the service
    /// forgot it, so that a client who saw its close acknowledged can no longer be rung. If the
    /// link is down, the next attach states the sockets held without it, which corrects the
    /// service as well.
    pub async fn forget(&self, connection_id: &str, user_id: &str, delivered_seq: u64) {
        let Some(outgoing) = self.outgoing() else {
            return;
        };
        let (done, forgotten) = oneshot::channel();
        self.forgetting().insert(connection_id.to_owned(), done);
        let closed = pb::GatewayMessage {
            kind: Some(pb::gateway_message::Kind::SocketClosed(pb::SocketClosed {
                connection_id: connection_id.to_owned(),
                user_id: user_id.to_owned(),
                delivered_seq,
            })),
        };
        if outgoing.send(closed).await.is_err()
            || tokio::time::timeout(self.register_timeout, forgotten)
                .await
                .is_err()
        {
            self.forgetting().remove(connection_id);
            tracing::warn!(
                connection = connection_id,
                "the service did not confirm a close; the next attach does"
            );
        }
    }

    fn forgetting(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<()>>> {
        self.forgetting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Users whose delivered position moved since the last report.
    fn unreported_seen(&self) -> Vec<pb::Seen> {
        self.registry
            .unreported_seen()
            .into_iter()
            .map(|(user_id, seq)| pb::Seen { user_id, seq })
            .collect()
    }

    /// Keeps the stream attached until `shutdown`, publishing readiness on `ready`.
    pub async fn run(self: Arc<Self>, ready: watch::Sender<bool>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => break,
                outcome = self.attach_once(&ready) => outcome,
            };
            ready.send_replace(false);
            self.detached();
            match outcome {
                Ok(()) => {
                    tracing::warn!("event stream closed by the service; reattaching");
                    backoff = Duration::from_millis(100);
                }
                Err(status) => {
                    tracing::warn!(%status, ?backoff, "event stream failed; reattaching");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        ready.send_replace(false);
        self.detached();
    }

    /// Forgets the attachment: sockets waiting for confirmation are refused.
    fn detached(&self) {
        *self.outgoing.lock().unwrap_or_else(|p| p.into_inner()) = None;
        for (_, waiter) in self.waiting().drain() {
            let _ = waiter.send(Err(LinkError::Detached));
        }
        for (_, waiter) in self.forgetting().drain() {
            let _ = waiter.send(());
        }
    }

    async fn attach_once(&self, ready: &watch::Sender<bool>) -> Result<(), tonic::Status> {
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_BUFFER);
        let sockets = self
            .registry
            .snapshot()
            .into_iter()
            .map(|(connection_id, user_id, delivered_seq)| pb::Socket {
                connection_id,
                user_id,
                delivered_seq,
            })
            .collect();
        let hello = pb::GatewayMessage {
            kind: Some(pb::gateway_message::Kind::Hello(pb::Hello {
                gateway_id: self.gateway_id.clone(),
                sockets,
            })),
        };
        outgoing
            .send(hello)
            .await
            .map_err(|_| tonic::Status::internal("hello not sent"))?;
        let mut inbound = self
            .client
            .clone()
            .attach(ReceiverStream::new(outgoing_rx))
            .await?
            .into_inner();
        let mut heartbeat = tokio::time::interval(Duration::from_secs(3));
        let mut report = tokio::time::interval(REPORT_DELIVERED_EVERY);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = report.tick() => {
                    let seen = self.unreported_seen();
                    if !seen.is_empty() {
                        let delivered = pb::GatewayMessage { kind: Some(pb::gateway_message::Kind::Delivered(pb::Delivered { seen })) };
                        if outgoing.send(delivered).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    let seen = self.unreported_seen();
                    let beat = pb::GatewayMessage { kind: Some(pb::gateway_message::Kind::Heartbeat(pb::Heartbeat { seen })) };
                    if outgoing.send(beat).await.is_err() {
                        return Ok(());
                    }
                }
                message = inbound.next() => match message {
                    None => return Ok(()),
                    Some(Err(status)) => return Err(status),
                    Some(Ok(pb::ServiceMessage { kind: Some(kind) })) => match kind {
                        pb::service_message::Kind::Welcome(welcome) => {
                            let lease = Duration::from_millis(welcome.lease_ms.max(1000));
                            heartbeat = tokio::time::interval((lease / 4).max(Duration::from_millis(250)));
                            *self.outgoing.lock().unwrap_or_else(|p| p.into_inner()) = Some(outgoing.clone());
                            ready.send_replace(true);
                            tracing::info!(replica = %welcome.replica_id, "event stream attached");
                        }
                        pb::service_message::Kind::Events(batch) => {
                            for event in batch.events {
                                dispatch(&self.registry, event);
                            }
                        }
                        pb::service_message::Kind::SocketForgotten(forgotten) => {
                            if let Some(waiter) = self.forgetting().remove(&forgotten.connection_id) {
                                let _ = waiter.send(());
                            }
                        }
                        pb::service_message::Kind::SocketRegistered(registered) => {
                            if let Some(waiter) = self.waiting().remove(&registered.connection_id) {
                                let result = if registered.error.is_empty() {
                                    Ok(Registered {
                                        last_seq: registered.last_seq,
                                        rings: registered.pending_rings,
                                        missed: registered.missed,
                                        resync: registered.resync,
                                        missed_calls: registered.missed_calls,
                                    })
                                } else if registered.code == pb::ErrorCode::TooManySockets as i32 {
                                    Err(LinkError::TooManySockets(registered.error))
                                } else {
                                    Err(LinkError::Refused(registered.error))
                                };
                                let _ = waiter.send(result);
                            }
                        }
                    },
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

/// Delivers one event to its user's sockets, in a span linked to the request that caused it.
fn dispatch(registry: &Registry, event: pb::Event) {
    let Some(kind) = &event.kind else {
        return;
    };
    let (name, data) = frames::event(kind);
    let span = tracing::info_span!(
        "videochat.event.deliver",
        otel.name = %format!("deliver {name}"),
        otel.kind = "producer",
        websocket.type = name,
        videochat.user = %event.recipient_user_id,
        videochat.event_seq = event.seq,
        videochat.sockets = tracing::field::Empty,
    );
    videochat_telemetry::link_to_traceparent(&span, &event.traceparent);
    let _entered = span.enter();
    let ring = match kind {
        pb::event::Kind::VideochatRequested(r) => Some(r.videochat_request_id.clone()),
        _ => None,
    };
    let now = now_ms();
    let text = envelope::event(name, &event.seq.to_string(), data, now);
    let frame = Arc::new(EventFrame {
        text: text.into(),
        name,
        ring,
    });
    let delivered = registry.deliver(&event.recipient_user_id, event.seq, &frame);
    span.record("videochat.sockets", delivered);
    metrics::counter!("videochat_gateway_events_delivered_total", "type" => name)
        .increment(delivered as u64);
    metrics::histogram!("videochat_event_delivery_seconds", "type" => name)
        .record((now - event.created_at).max(0) as f64 / 1000.0);
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
