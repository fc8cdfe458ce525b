//! `videochat.handshake.v1.GatewayLink`: a thin adapter from the Attach stream to
//! [`crate::delivery::link`] — parse the gateway's messages into presence, hand back a stream of
//! service messages.

use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use videochat_proto::v1 as pb;
use videochat_proto::v1::gateway_link_server;

use super::convert::{parse_id, patch_from_pb};
use super::status::invalid;
use crate::delivery::LINK_BUFFER;
use crate::delivery::link::{HeldSocket, Links, Presence};
use crate::domain::{ConnectionId, GatewayId, UserId};
use crate::store::OpenedSocket;

/// Presence messages read ahead of the link task.
const INBOUND_BUFFER: usize = 1024;

pub struct GatewayLinkApi {
    links: Links,
    shutdown: CancellationToken,
}

impl GatewayLinkApi {
    pub fn new(links: Links, shutdown: CancellationToken) -> Self {
        Self { links, shutdown }
    }
}

type ServiceStream = Pin<Box<dyn Stream<Item = Result<pb::ServiceMessage, Status>> + Send>>;

#[tonic::async_trait]
impl gateway_link_server::GatewayLink for GatewayLinkApi {
    type AttachStream = ServiceStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::GatewayMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut stream = request.into_inner();
        let hello = match stream.next().await {
            Some(Ok(pb::GatewayMessage {
                kind: Some(pb::gateway_message::Kind::Hello(hello)),
            })) => hello,
            Some(Err(status)) => return Err(status),
            _ => return Err(invalid("hello", "the first message must be Hello")),
        };
        let gateway = parse_id("hello.gateway_id", hello.gateway_id, GatewayId::parse)?;
        let mut held = Vec::with_capacity(hello.sockets.len());
        for socket in hello.sockets {
            held.push(HeldSocket {
                connection: parse_id(
                    "sockets.connection_id",
                    socket.connection_id,
                    ConnectionId::parse,
                )?,
                user: parse_id("sockets.user_id", socket.user_id, UserId::parse)?,
                delivered_seq: socket.delivered_seq,
            });
        }
        let (sender, receiver) = mpsc::channel(LINK_BUFFER);
        let (presence, inbound) = mpsc::channel(INBOUND_BUFFER);
        tokio::spawn(read_presence(stream, presence));
        tokio::spawn(self.links.clone().serve(
            gateway,
            held,
            inbound,
            sender,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Turns the gateway's messages into presence; a malformed one ends the link with its error.
async fn read_presence(
    mut stream: Streaming<pb::GatewayMessage>,
    presence: mpsc::Sender<Result<Presence, Status>>,
) {
    while let Some(message) = stream.next().await {
        let parsed = message.and_then(|message| match message.kind {
            Some(pb::gateway_message::Kind::SocketOpened(opened)) => {
                Ok(Presence::Opened(OpenedSocket {
                    connection: parse_id(
                        "socket_opened.connection_id",
                        opened.connection_id,
                        ConnectionId::parse,
                    )?,
                    user: parse_id("socket_opened.user_id", opened.user_id, UserId::parse)?,
                    profile: patch_from_pb(opened.profile)?,
                    resume_after: opened.resume_after,
                }))
            }
            Some(pb::gateway_message::Kind::SocketClosed(closed)) => Ok(Presence::Closed(
                parse_id(
                    "socket_closed.connection_id",
                    closed.connection_id,
                    ConnectionId::parse,
                )?,
                parse_id("socket_closed.user_id", closed.user_id, UserId::parse)?,
                closed.delivered_seq,
            )),
            Some(pb::gateway_message::Kind::Heartbeat(beat)) => {
                parse_seen(beat.seen).map(Presence::Heartbeat)
            }
            Some(pb::gateway_message::Kind::Delivered(delivered)) => {
                parse_seen(delivered.seen).map(Presence::Delivered)
            }
            Some(pb::gateway_message::Kind::Hello(_)) => {
                Err(invalid("hello", "Hello comes once, first"))
            }
            None => Err(invalid("kind", "is required")),
        });
        let failed = parsed.is_err();
        if presence.send(parsed).await.is_err() || failed {
            return;
        }
    }
}

fn parse_seen(seen: Vec<pb::Seen>) -> Result<Vec<(UserId, u64)>, Status> {
    seen.into_iter()
        .map(|seen| {
            Ok((
                parse_id("seen.user_id", seen.user_id, UserId::parse)?,
                seen.seq,
            ))
        })
        .collect()
}
