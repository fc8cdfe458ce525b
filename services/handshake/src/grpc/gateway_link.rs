//! `videochat.handshake.v1.GatewayLink`: presence in, events out.
//!
//! Each attached gateway gets one task that reads the outbox after the gateway's cursor and
//! streams the events of users with a socket on that gateway, in outbox order. It wakes when a
//! commit appends events (here, or on another replica through the store's signal), and polls
//! as a fallback. Delivery is at-least-once: a gateway that reattaches resumes after the last
//! position it delivered, and ignores positions it has already seen.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use videochat_proto::v1 as pb;
use videochat_proto::v1::gateway_link_server;

use super::convert::{event_kind_to_pb, parse_id, patch_from_pb, ring_to_pb};
use super::status::invalid;
use crate::domain::{ConnectionId, Event, GatewayId, UserId};
use crate::service::{Handshake, now_ms};
use crate::store::StoredEvent;

/// Events per read of the outbox (and per message to the gateway).
const BATCH: i64 = 256;
/// Messages buffered towards one gateway before the stream task waits for it.
const STREAM_BUFFER: usize = 16;

pub struct GatewayLinkApi {
    handshake: Handshake,
    poll: Duration,
    shutdown: CancellationToken,
}

impl GatewayLinkApi {
    pub fn new(handshake: Handshake, poll: Duration, shutdown: CancellationToken) -> Self {
        Self {
            handshake,
            poll,
            shutdown,
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ServiceMessage, Status>> + Send>>;

#[tonic::async_trait]
impl gateway_link_server::GatewayLink for GatewayLinkApi {
    type AttachStream = EventStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::GatewayMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.next().await {
            Some(Ok(pb::GatewayMessage {
                kind: Some(pb::gateway_message::Kind::Hello(hello)),
            })) => hello,
            Some(Err(status)) => return Err(status),
            _ => return Err(invalid("hello", "the first message must be Hello")),
        };
        let gateway = parse_id("hello.gateway_id", hello.gateway_id, GatewayId::parse)?;
        let mut connections = Vec::with_capacity(hello.connections.len());
        for c in hello.connections {
            connections.push((
                parse_id("connection_id", c.connection_id, ConnectionId::parse)?,
                parse_id("user_id", c.user_id, UserId::parse)?,
            ));
        }
        self.handshake
            .attach_gateway(&gateway, &connections)
            .await?;
        let store = self.handshake.store().clone();
        let cursor = match hello.resume_after {
            Some(cursor) => cursor,
            None => store
                .latest_seq()
                .await
                .map_err(crate::error::HandshakeError::from)?,
        };
        tracing::info!(%gateway, cursor, sockets = connections.len(), "gateway attached");
        metrics::gauge!("videochat_gateways_attached").increment(1.0);

        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let welcome = pb::ServiceMessage {
            kind: Some(pb::service_message::Kind::Welcome(pb::Welcome {
                cursor,
                lease_ms: u64::try_from(self.handshake.presence_lease().as_millis())
                    .unwrap_or(u64::MAX),
            })),
        };
        sender
            .send(Ok(welcome))
            .await
            .map_err(|_| Status::cancelled("gateway went away"))?;
        let feed = Feed {
            handshake: self.handshake.clone(),
            gateway,
            cursor,
            poll: self.poll,
            sender,
        };
        tokio::spawn(feed.run(inbound, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    #[tracing::instrument(skip_all, fields(videochat.user))]
    async fn open_connection(
        &self,
        request: Request<pb::OpenConnectionRequest>,
    ) -> Result<Response<pb::OpenConnectionResponse>, Status> {
        let r = request.into_inner();
        let gateway = parse_id("gateway_id", r.gateway_id, GatewayId::parse)?;
        let connection = parse_id("connection_id", r.connection_id, ConnectionId::parse)?;
        let user = parse_id("user_id", r.user_id, UserId::parse)?;
        tracing::Span::current().record("videochat.user", user.as_str());
        let profile = patch_from_pb(r.profile)?;
        let rings = self
            .handshake
            .open_connection(&gateway, &connection, &user, &profile)
            .await?;
        Ok(Response::new(pb::OpenConnectionResponse {
            pending_rings: rings.iter().map(ring_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn close_connection(
        &self,
        request: Request<pb::CloseConnectionRequest>,
    ) -> Result<Response<pb::CloseConnectionResponse>, Status> {
        let r = request.into_inner();
        let connection = parse_id("connection_id", r.connection_id, ConnectionId::parse)?;
        self.handshake.close_connection(&connection).await?;
        Ok(Response::new(pb::CloseConnectionResponse {}))
    }
}

/// The stream task of one attached gateway.
struct Feed {
    handshake: Handshake,
    gateway: GatewayId,
    cursor: u64,
    poll: Duration,
    sender: mpsc::Sender<Result<pb::ServiceMessage, Status>>,
}

impl Feed {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::GatewayMessage>,
        shutdown: CancellationToken,
    ) {
        let mut signal = self.handshake.store().outbox_signal();
        loop {
            signal.borrow_and_update();
            if let Err(error) = self.deliver().await {
                tracing::warn!(gateway = %self.gateway, %error, "event stream ended");
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.sender.closed() => break,
                changed = signal.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = tokio::time::sleep(self.poll) => {}
                message = inbound.next() => match message {
                    Some(Ok(pb::GatewayMessage { kind: Some(pb::gateway_message::Kind::Heartbeat(_)) })) => {
                        if let Err(error) = self.handshake.renew_gateway(&self.gateway).await {
                            tracing::warn!(gateway = %self.gateway, %error, "cannot renew presence lease");
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(status)) => {
                        tracing::info!(gateway = %self.gateway, %status, "gateway stream error");
                        break;
                    }
                    None => break,
                },
            }
        }
        metrics::gauge!("videochat_gateways_attached").decrement(1.0);
        tracing::info!(gateway = %self.gateway, cursor = self.cursor, "gateway detached");
    }

    /// Sends every event after the cursor, up to the newest committed position.
    async fn deliver(&mut self) -> Result<(), DeliverError> {
        let store = self.handshake.store();
        let upto = store.latest_seq().await?;
        while self.cursor < upto {
            let batch = store
                .events_for_gateway(&self.gateway, self.cursor, upto, BATCH)
                .await?;
            let full = batch.len() as i64 == BATCH;
            let next_cursor = match (full, batch.last()) {
                (true, Some(last)) => last.seq,
                _ => upto,
            };
            if !batch.is_empty() {
                let now = now_ms();
                metrics::histogram!("videochat_outbox_lag_seconds").record(
                    batch
                        .iter()
                        .map(|e| now - e.created_at_ms)
                        .max()
                        .unwrap_or(0)
                        .max(0) as f64
                        / 1000.0,
                );
                let events = batch.into_iter().filter_map(to_pb).collect();
                let message = pb::ServiceMessage {
                    kind: Some(pb::service_message::Kind::Events(pb::EventBatch { events })),
                };
                self.sender
                    .send(Ok(message))
                    .await
                    .map_err(|_| DeliverError::GatewayGone)?;
            }
            self.cursor = next_cursor;
        }
        Ok(())
    }
}

fn to_pb(stored: StoredEvent) -> Option<pb::Event> {
    let event: Event = match serde_json::from_slice(&stored.payload) {
        Ok(event) => event,
        Err(error) => {
            tracing::error!(seq = stored.seq, %error, "unreadable outbox event skipped");
            return None;
        }
    };
    Some(pb::Event {
        seq: stored.seq,
        event_id: stored.event_id,
        recipient_user_id: stored.recipient.to_string(),
        created_at: stored.created_at_ms,
        traceparent: stored.traceparent,
        kind: Some(event_kind_to_pb(&event)),
    })
}

#[derive(Debug, thiserror::Error)]
enum DeliverError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("gateway went away")]
    GatewayGone,
}
