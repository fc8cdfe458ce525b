//! One attached gateway: its presence (sockets opened and closed, the lease) and the catch-up
//! it is owed when it attaches.
//!
//! Sockets are registered in batches: while one batch commits, the next one gathers, so a
//! gateway that restarts with thousands of clients reconnecting pays a transaction per batch,
//! not per socket, and no registration waits on a row that all the others update.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use videochat_proto::v1 as pb;

use super::resume::{self, Opening};
use super::{Hub, LinkSender, stored_to_pb};
use crate::domain::{ConnectionId, GatewayId, UserId};
use crate::service::now_ms;
use crate::store::{EventRange, OpenedSocket, Registration, Store, StoreResult};

/// Most sockets registered in one transaction.
const REGISTER_BATCH: usize = 512;
/// Events per message when catching a gateway up.
const REPLAY_BATCH: usize = 256;

/// A socket a gateway held when it attached, with the last position it delivered to its user.
pub struct HeldSocket {
    pub connection: ConnectionId,
    pub user: UserId,
    pub delivered_seq: u64,
}

/// What a gateway says on its link after Hello.
pub enum Presence {
    Opened(OpenedSocket),
    /// A socket closed; the newest position of its user delivered on that gateway.
    Closed(ConnectionId, UserId, u64),
    /// The lease is renewed; users whose delivered position advanced, with that position.
    Heartbeat(Vec<(UserId, u64)>),
    /// Users whose delivered position advanced, with that position.
    Delivered(Vec<(UserId, u64)>),
}

/// What every link of a replica shares.
#[derive(Clone)]
pub struct Links {
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub lease: Duration,
    pub replica_id: String,
    /// Most live sockets one user may hold across all gateways
    /// (`VIDEOCHAT_MAX_SOCKETS_PER_USER_CLUSTER`); one more is refused with 10019.
    pub max_sockets_per_user: u32,
}

impl Links {
    fn lease_until(&self) -> i64 {
        now_ms() + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// Serves one attached gateway until its stream ends, it falls behind, or `shutdown`.
    pub async fn serve(
        self,
        gateway: GatewayId,
        held: Vec<HeldSocket>,
        mut inbound: mpsc::Receiver<Result<Presence, Status>>,
        sender: LinkSender,
        shutdown: CancellationToken,
    ) {
        let cut = CancellationToken::new();
        let link = self.hub.attach(sender.clone(), cut.clone());
        for socket in &held {
            self.hub.add_socket(link, &socket.user);
        }
        metrics::gauge!("videochat_gateways_attached").increment(1.0);
        if let Err(status) = self.welcome(&gateway, &held, &sender).await {
            tracing::warn!(%gateway, %status, "gateway could not attach");
            let _ = sender.send(Err(status)).await;
            self.hub.detach(link);
            metrics::gauge!("videochat_gateways_attached").decrement(1.0);
            return;
        }
        self.hub.release(link);
        tracing::info!(%gateway, sockets = held.len(), "gateway attached");

        let (to_register, registrations) = mpsc::channel(REGISTER_BATCH * 4);
        let registrar = tokio::spawn(self.clone().register(
            gateway.clone(),
            registrations,
            sender.clone(),
        ));
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = cut.cancelled() => break,
                message = inbound.recv() => message,
            };
            match message {
                Some(Ok(Presence::Opened(socket))) => {
                    self.hub.add_socket(link, &socket.user);
                    if to_register.send(Presence::Opened(socket)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Presence::Closed(connection, user, delivered))) => {
                    self.hub.remove_socket(link, &user);
                    if to_register
                        .send(Presence::Closed(connection, user, delivered))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Some(Ok(Presence::Delivered(seen))) => {
                    if to_register.send(Presence::Delivered(seen)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Presence::Heartbeat(seen))) => {
                    match self
                        .store
                        .renew_gateway_lease(&gateway, self.lease_until())
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            // Its lease ran out (the database was unreachable longer than the
                            // lease) and its sockets were swept: have it attach again and state
                            // them, or its users would stay unavailable.
                            tracing::warn!(%gateway, "presence lease lapsed; asking the gateway to reattach");
                            metrics::counter!("videochat_gateway_leases_lapsed_total").increment(1);
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%gateway, %error, "cannot renew presence lease");
                        }
                    }
                    if let Err(error) = self.store.mark_seen(&seen).await {
                        tracing::warn!(%gateway, %error, "cannot record delivered positions");
                    }
                    // Lets the registrar retry closes it could not record yet.
                    if to_register
                        .send(Presence::Heartbeat(Vec::new()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Some(Err(status)) => {
                    tracing::info!(%gateway, %status, "gateway link error");
                    break;
                }
                None => break,
            }
        }
        self.hub.detach(link);
        drop(to_register);
        let _ = registrar.await;
        metrics::gauge!("videochat_gateways_attached").decrement(1.0);
        tracing::info!(%gateway, "gateway detached");
    }

    /// Records the gateway's sockets, says Welcome, and sends what it missed.
    async fn welcome(
        &self,
        gateway: &GatewayId,
        held: &[HeldSocket],
        sender: &LinkSender,
    ) -> Result<(), Status> {
        let sockets: Vec<(ConnectionId, UserId)> = held
            .iter()
            .map(|s| (s.connection.clone(), s.user.clone()))
            .collect();
        self.store
            .attach_gateway(gateway, &sockets, self.lease_until(), now_ms())
            .await
            .map_err(crate::error::HandshakeError::from)?;
        let welcome = pb::ServiceMessage {
            kind: Some(pb::service_message::Kind::Welcome(pb::Welcome {
                lease_ms: u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX),
                replica_id: self.replica_id.clone(),
            })),
        };
        sender
            .send(Ok(welcome))
            .await
            .map_err(|_| Status::cancelled("gateway went away"))?;
        // Per user, the earliest position any of its sockets here still needs.
        let mut cursors: HashMap<&UserId, u64> = HashMap::new();
        for socket in held {
            let cursor = cursors.entry(&socket.user).or_insert(socket.delivered_seq);
            *cursor = (*cursor).min(socket.delivered_seq);
        }
        let seen: Vec<(UserId, u64)> = cursors
            .into_iter()
            .map(|(user, seq)| (user.clone(), seq))
            .collect();
        let ranges: Vec<EventRange> = seen
            .iter()
            .map(|(user, after)| EventRange {
                user: user.clone(),
                after: *after,
                through: u64::MAX,
            })
            .collect();
        let missed = self
            .store
            .events_in(&ranges)
            .await
            .map_err(crate::error::HandshakeError::from)?;
        if let Err(error) = self.store.mark_seen(&seen).await {
            tracing::warn!(%gateway, %error, "cannot record delivered positions");
        }
        if !missed.is_empty() {
            tracing::info!(%gateway, events = missed.len(), "catching a gateway up");
            metrics::counter!("videochat_events_replayed_total").increment(missed.len() as u64);
        }
        let events: Vec<pb::Event> = missed.into_iter().filter_map(stored_to_pb).collect();
        for chunk in events.chunks(REPLAY_BATCH) {
            let message = pb::ServiceMessage {
                kind: Some(pb::service_message::Kind::Events(pb::EventBatch {
                    events: chunk.to_vec(),
                })),
            };
            sender
                .send(Ok(message))
                .await
                .map_err(|_| Status::cancelled("gateway went away"))?;
        }
        Ok(())
    }

    /// Registers opened sockets and forgets closed ones, a batch at a time.
    async fn register(
        self,
        gateway: GatewayId,
        mut presence: mpsc::Receiver<Presence>,
        sender: LinkSender,
    ) {
        let mut unclosed: Vec<ConnectionId> = Vec::new();
        while let Some(first) = presence.recv().await {
            let mut opened = Vec::new();
            let mut closed = std::mem::take(&mut unclosed);
            let mut seen = Vec::new();
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Presence::Opened(socket) => opened.push(socket),
                    Presence::Closed(connection, user, delivered) => {
                        closed.push(connection);
                        if delivered > 0 {
                            seen.push((user, delivered));
                        }
                    }
                    Presence::Heartbeat(_) => {}
                    Presence::Delivered(delivered) => seen.extend(delivered),
                }
                if opened.len() < REGISTER_BATCH {
                    next = presence.try_recv().ok();
                }
            }
            if !opened.is_empty() {
                self.register_batch(&gateway, &opened, &sender).await;
            }
            if let Err(error) = self.store.mark_seen(&seen).await {
                tracing::warn!(%gateway, %error, "cannot record delivered positions");
            }
            if closed.is_empty() {
                continue;
            }
            match self.store.close_sockets(&closed).await {
                Ok(()) => {
                    for connection in closed {
                        let forgotten = pb::ServiceMessage {
                            kind: Some(pb::service_message::Kind::SocketForgotten(
                                pb::SocketForgotten {
                                    connection_id: connection.to_string(),
                                },
                            )),
                        };
                        if sender.send(Ok(forgotten)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(error) => {
                    // Kept for the next batch; a reattach replaces the rows anyway.
                    tracing::warn!(%gateway, %error, sockets = closed.len(), "cannot forget closed sockets yet");
                    unclosed = closed;
                }
            }
        }
    }

    /// The registration replies: each socket's start position and what it is owed before it,
    /// or its refusal.
    async fn owed(
        &self,
        gateway: &GatewayId,
        opened: &[OpenedSocket],
        registered: StoreResult<Vec<Registration>>,
    ) -> StoreResult<Vec<pb::SocketRegistered>> {
        let registrations = registered?;
        let openings: Vec<Opening<'_>> = opened
            .iter()
            .zip(&registrations)
            .filter(|(_, registration)| !registration.refused)
            .map(|(socket, registration)| Opening {
                user: &socket.user,
                resume_after: socket.resume_after,
                registration,
            })
            .collect();
        let mut owed = resume::owed(self.store.as_ref(), &openings, now_ms())
            .await?
            .into_iter();
        Ok(opened
            .iter()
            .zip(&registrations)
            .map(|(socket, registration)| {
                if registration.refused {
                    return self.refuse_over_limit(gateway, socket);
                }
                let owed = owed.next().unwrap_or_default();
                pb::SocketRegistered {
                    connection_id: socket.connection.to_string(),
                    error: String::new(),
                    last_seq: registration.last_seq,
                    pending_rings: owed.rings,
                    missed: owed.missed,
                    resync: owed.resync,
                    code: 0,
                    missed_calls: owed.missed_calls,
                }
            })
            .collect())
    }

    /// The refusal of a socket whose user already holds the most sockets allowed: the gateway
    /// refuses the upgrade (HTTP 429 naming 10019) and reports the socket closed.
    fn refuse_over_limit(
        &self,
        gateway: &GatewayId,
        socket: &OpenedSocket,
    ) -> pb::SocketRegistered {
        tracing::info!(%gateway, user = %socket.user, limit = self.max_sockets_per_user, "socket refused: too many sockets for the user");
        metrics::counter!("videochat_limits_total", "limit" => "sockets_per_user").increment(1);
        let code = crate::error::ErrorCode::TooManySockets;
        pb::SocketRegistered {
            connection_id: socket.connection.to_string(),
            error: format!(
                "too many sockets for this user: at most {} across the service",
                self.max_sockets_per_user
            ),
            code: code as i32,
            ..Default::default()
        }
    }

    async fn register_batch(
        &self,
        gateway: &GatewayId,
        opened: &[OpenedSocket],
        sender: &LinkSender,
    ) {
        metrics::histogram!("videochat_socket_registration_batch").record(opened.len() as f64);
        let result = self
            .store
            .register_sockets(
                gateway,
                opened,
                self.max_sockets_per_user,
                self.lease_until(),
                now_ms(),
            )
            .await;
        let replies: Vec<pb::SocketRegistered> = match self.owed(gateway, opened, result).await {
            Ok(replies) => replies,
            Err(error) => {
                tracing::warn!(%gateway, %error, sockets = opened.len(), "cannot register sockets");
                opened
                    .iter()
                    .map(|socket| pb::SocketRegistered {
                        connection_id: socket.connection.to_string(),
                        error: "the handshake service cannot record the socket now".into(),
                        ..Default::default()
                    })
                    .collect()
            }
        };
        for reply in replies {
            let message = pb::ServiceMessage {
                kind: Some(pb::service_message::Kind::SocketRegistered(reply)),
            };
            if sender.send(Ok(message)).await.is_err() {
                return;
            }
        }
    }
}
