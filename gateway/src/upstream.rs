//! Client requests to the handshake service: one unary `Handshake` call per frame, with the
//! deadline and the frame's trace context. (Presence and events travel on [`crate::link`].)

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tracing::{Instrument, Span};
use videochat_proto::v1 as pb;
use videochat_proto::v1::handshake_client::HandshakeClient;

use crate::credentials::ToService;
use crate::envelope::{ClientRequest, Inbound};
use crate::error::CallError;
use crate::frames;

/// One HTTP/2 connection to the handshake service, shared by the unary calls and the link
/// (over TLS when `tls` is given; see [`crate::credentials`]).
pub fn channel(
    url: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let endpoint = match tls {
        Some(tls) => endpoint.tls_config(tls)?,
        None => endpoint,
    };
    Ok(endpoint.connect_lazy())
}

#[derive(Clone)]
pub struct Upstream {
    handshake: HandshakeClient<ToService>,
    rpc_timeout: Duration,
}

impl Upstream {
    pub fn new(channel: ToService, rpc_timeout: Duration) -> Self {
        Self {
            handshake: HandshakeClient::new(channel),
            rpc_timeout,
        }
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
