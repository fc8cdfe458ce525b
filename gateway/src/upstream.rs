//! The gateway's link to the handshake service: unary calls for client requests and presence,
//! and the event stream that feeds the [`Registry`].
//!
//! The event stream reattaches by itself after any failure (service restart, network), resuming
//! after the last outbox position delivered, and re-announcing the sockets held here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{Instrument, Span};
use videochat_proto::v1 as pb;
use videochat_proto::v1::gateway_link_client::GatewayLinkClient;
use videochat_proto::v1::handshake_client::HandshakeClient;

use crate::envelope::{self, ClientRequest, Inbound};
use crate::error::CallError;
use crate::frames;
use crate::registry::{Outbound, Registry};

#[derive(Clone)]
pub struct Upstream {
    handshake: HandshakeClient<Channel>,
    link: GatewayLinkClient<Channel>,
    gateway_id: String,
    rpc_timeout: Duration,
}

impl Upstream {
    pub fn new(
        url: &str,
        gateway_id: String,
        rpc_timeout: Duration,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Self {
            handshake: HandshakeClient::new(channel.clone()),
            link: GatewayLinkClient::new(channel),
            gateway_id,
            rpc_timeout,
        })
    }

    /// A request with the deadline and the current span's trace context in its metadata.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.rpc_timeout);
        let mut headers = http::HeaderMap::new();
        videochat_telemetry::inject(&Span::current(), &mut headers);
        for (name, value) in &headers {
            if let Ok(key) = tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes())
                && let Ok(value) = value.to_str()
                && let Ok(value) = value.parse()
            {
                request.metadata_mut().insert(key, value);
            }
        }
        request
    }

    /// Runs a client request for `user`; returns the response's `data`, if it has one.
    pub async fn call(&self, user: &str, inbound: &Inbound) -> Result<Option<Value>, CallError> {
        let actor = Some(pb::Actor {
            user_id: user.to_owned(),
            idempotency_key: inbound.event_id.clone(),
        });
        let method = rpc_method(&inbound.request);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %format!("videochat.handshake.v1.Handshake/{method}"),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = "videochat.handshake.v1.Handshake",
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .send(actor, &inbound.request)
            .instrument(span.clone())
            .await;
        span.record(
            "rpc.grpc.status_code",
            match &result {
                Ok(_) => 0,
                Err(status) => status.code() as i64,
            },
        );
        metrics::histogram!("videochat_gateway_rpc_seconds", "type" => inbound.kind)
            .record(started.elapsed().as_secs_f64());
        // Inside the span, so a 1004 message carries this request's trace id.
        span.in_scope(|| result.map_err(CallError::from))
    }

    async fn send(
        &self,
        actor: Option<pb::Actor>,
        request: &ClientRequest,
    ) -> Result<Option<Value>, tonic::Status> {
        let mut client = self.handshake.clone();
        match request {
            ClientRequest::RequestDirectVideochat { target_user } => client
                .request_direct_videochat(self.request(pb::RequestDirectVideochatRequest {
                    actor,
                    target_user: target_user.clone(),
                    engine: String::new(),
                }))
                .await
                .map(|r| {
                    Some(json!({ "videochatRequestId": r.into_inner().videochat_request_id }))
                }),
            ClientRequest::Invite {
                target_user,
                videochat_id,
            } => client
                .invite(self.request(pb::InviteRequest {
                    actor,
                    target_user: target_user.clone(),
                    videochat_id: videochat_id.clone(),
                }))
                .await
                .map(|r| {
                    Some(json!({ "videochatRequestId": r.into_inner().videochat_request_id }))
                }),
            ClientRequest::AcceptVideochatRequest {
                videochat_request_id,
            } => client
                .accept_videochat_request(self.request(pb::AcceptVideochatRequestRequest {
                    actor,
                    videochat_request_id: videochat_request_id.clone(),
                }))
                .await
                .map(|r| r.into_inner().credentials.as_ref().map(frames::credentials)),
            ClientRequest::DeclineVideochatRequest {
                videochat_request_id,
            } => client
                .decline_videochat_request(self.request(pb::DeclineVideochatRequestRequest {
                    actor,
                    videochat_request_id: videochat_request_id.clone(),
                }))
                .await
                .map(|_| None),
            ClientRequest::MergeToVideochat {
                videochat_id,
                videochat_request_id,
            } => client
                .merge_to_videochat(self.request(pb::MergeToVideochatRequest {
                    actor,
                    videochat_id: videochat_id.clone(),
                    videochat_request_id: videochat_request_id.clone(),
                }))
                .await
                .map(|_| None),
        }
    }

    /// Records a new socket with the service; returns the rings it must show at once.
    pub async fn open_connection(
        &self,
        connection_id: &str,
        user_id: &str,
        profile: pb::UserPatch,
    ) -> Result<Vec<pb::VideochatRequested>, CallError> {
        let response = self
            .link
            .clone()
            .open_connection(self.request(pb::OpenConnectionRequest {
                gateway_id: self.gateway_id.clone(),
                connection_id: connection_id.to_owned(),
                user_id: user_id.to_owned(),
                profile: Some(profile),
            }))
            .await?;
        Ok(response.into_inner().pending_rings)
    }

    /// Tells the service a socket closed, retrying briefly; if it never hears, the presence
    /// lease of this gateway still bounds how long the socket counts as present.
    pub async fn close_connection(&self, connection_id: &str) {
        for attempt in 0..3u32 {
            let result = self
                .link
                .clone()
                .close_connection(self.request(pb::CloseConnectionRequest {
                    gateway_id: self.gateway_id.clone(),
                    connection_id: connection_id.to_owned(),
                }))
                .await;
            match result {
                Ok(_) => return,
                Err(status) => {
                    tracing::warn!(connection = connection_id, attempt, %status, "cannot report closed socket");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
                }
            }
        }
    }

    /// Keeps the event stream attached until shutdown, publishing readiness on `ready`.
    pub async fn run_event_stream(
        self,
        registry: Arc<Registry>,
        ready: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) {
        let last_seq = AtomicU64::new(0);
        // Set at the first Welcome: from then on, reattaching resumes after `last_seq`.
        let welcomed = std::sync::atomic::AtomicBool::new(false);
        let mut backoff = Duration::from_millis(100);
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => break,
                outcome = self.attach_once(&registry, &ready, &last_seq, &welcomed) => outcome,
            };
            ready.send_replace(false);
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
    }

    async fn attach_once(
        &self,
        registry: &Registry,
        ready: &watch::Sender<bool>,
        last_seq: &AtomicU64,
        welcomed: &std::sync::atomic::AtomicBool,
    ) -> Result<(), tonic::Status> {
        let resumed = welcomed.load(Ordering::SeqCst);
        let (outgoing, outgoing_rx) = mpsc::channel(4);
        let hello = pb::Hello {
            gateway_id: self.gateway_id.clone(),
            resume_after: resumed.then(|| last_seq.load(Ordering::SeqCst)),
            connections: registry
                .snapshot()
                .into_iter()
                .map(|(connection_id, user_id)| pb::Connection {
                    connection_id,
                    user_id,
                })
                .collect(),
        };
        outgoing
            .send(pb::GatewayMessage {
                kind: Some(pb::gateway_message::Kind::Hello(hello)),
            })
            .await
            .map_err(|_| tonic::Status::internal("hello not sent"))?;
        let mut inbound = self
            .link
            .clone()
            .attach(ReceiverStream::new(outgoing_rx))
            .await?
            .into_inner();
        let mut heartbeat = tokio::time::interval(Duration::from_secs(3));
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    let beat = pb::GatewayMessage { kind: Some(pb::gateway_message::Kind::Heartbeat(pb::Heartbeat {})) };
                    if outgoing.send(beat).await.is_err() {
                        return Ok(());
                    }
                }
                message = inbound.next() => match message {
                    None => return Ok(()),
                    Some(Err(status)) => return Err(status),
                    Some(Ok(pb::ServiceMessage { kind: Some(pb::service_message::Kind::Welcome(welcome)) })) => {
                        if !resumed {
                            last_seq.store(welcome.cursor, Ordering::SeqCst);
                            welcomed.store(true, Ordering::SeqCst);
                        }
                        let lease = Duration::from_millis(welcome.lease_ms.max(1000));
                        heartbeat = tokio::time::interval((lease / 4).max(Duration::from_millis(250)));
                        ready.send_replace(true);
                        tracing::info!(cursor = welcome.cursor, "event stream attached");
                    }
                    Some(Ok(pb::ServiceMessage { kind: Some(pb::service_message::Kind::Events(batch)) })) => {
                        for event in batch.events {
                            if event.seq <= last_seq.load(Ordering::SeqCst) {
                                continue;
                            }
                            last_seq.store(event.seq, Ordering::SeqCst);
                            dispatch(registry, event);
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

fn rpc_method(request: &ClientRequest) -> &'static str {
    match request {
        ClientRequest::RequestDirectVideochat { .. } => "RequestDirectVideochat",
        ClientRequest::Invite { .. } => "Invite",
        ClientRequest::AcceptVideochatRequest { .. } => "AcceptVideochatRequest",
        ClientRequest::DeclineVideochatRequest { .. } => "DeclineVideochatRequest",
        ClientRequest::MergeToVideochat { .. } => "MergeToVideochat",
    }
}

/// Delivers one event to the user's sockets, in a span linked to the request that caused it.
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
    let text = envelope::event(name, &event.event_id, data, now);
    let delivered = registry.deliver(
        &event.recipient_user_id,
        &Outbound::Event { text, name, ring },
    );
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
