//! Client requests to the handshake service: one unary `Handshake` call per frame, with the
//! deadline and the frame's trace context, retried on another replica when the one it went to
//! was not there. (Presence and events travel on [`crate::link`], over the same channel.)
//!
//! Retrying is safe because every call carries the frame's `event.id` as its idempotency key:
//! a replica that receives a call already answered (by itself or another replica, before the
//! answer was lost) answers it the same way, and a call that two replicas run at once commits
//! once (the idempotency record is a primary key). So a call is retried whenever the failure
//! says nothing about the call itself — the connection failed or was refused, the replica went
//! away before answering ([`retryable`]) — up to [`ATTEMPTS`] times, always within the frame's
//! one deadline (`VIDEOCHAT_RPC_TIMEOUT_MS`). `DEADLINE_EXCEEDED` is not retried: it means
//! that deadline is spent, and the service has not said anything a retry could change. The
//! service's own answers (they carry the contract code in an `ErrorInfo`) are never retried.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_types::StatusExt;
use tracing::{Instrument, Span};
use videochat_proto::v1 as pb;
use videochat_proto::v1::ERROR_DOMAIN;
use videochat_proto::v1::engine_events_client::EngineEventsClient;
use videochat_proto::v1::handshake_client::HandshakeClient;
use videochat_proto::v1::user_directory_client::UserDirectoryClient;

use crate::credentials::ToService;
use crate::endpoints::{self, Discovery, Endpoints, EndpointsError, Refresh};
use crate::envelope::{ClientRequest, Inbound};
use crate::error::CallError;
use crate::frames;

/// Most tries of one call (the first and the retries), all within its deadline.
pub const ATTEMPTS: u32 = 5;

/// The pause before the first retry; it doubles for each further one (25, 50, 100, 200 ms):
/// long enough for the prober to take a dead replica out of the balancer, short enough that a
/// replica kill costs a user a fraction of a second.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(25);

/// The channel to the handshake service, balanced over the replicas that
/// `VIDEOCHAT_HANDSHAKE_URL` names (see [`crate::endpoints`]), shared by the unary calls and
/// the link (over TLS when `tls` is given, for `https://` URLs; see [`crate::credentials`]);
/// the handle calls report failures to; and the task keeping the replica list current (spawn
/// it; it runs until `stop`).
pub fn channel(
    urls: &str,
    tls: Option<ClientTlsConfig>,
    refresh: Refresh,
) -> Result<(Channel, Endpoints, Discovery), EndpointsError> {
    let secure = endpoints::secure(urls)?;
    let targets = endpoints::parse(urls)?;
    if secure != tls.is_some() {
        return Err(EndpointsError::Tls(urls.to_owned()));
    }
    Ok(endpoints::balanced(
        targets,
        move |address| endpoint(address, tls.as_ref()),
        refresh,
    ))
}

/// One replica's HTTP/2 connection settings.
fn endpoint(address: std::net::SocketAddr, tls: Option<&ClientTlsConfig>) -> Endpoint {
    let endpoint = Endpoint::from(
        http::Uri::builder()
            .scheme(if tls.is_some() { "https" } else { "http" })
            .authority(address.to_string())
            .path_and_query("/")
            .build()
            .expect("a socket address is a valid authority"),
    )
    .connect_timeout(Duration::from_secs(3))
    .tcp_nodelay(true)
    .http2_keep_alive_interval(Duration::from_secs(15))
    .keep_alive_timeout(Duration::from_secs(10))
    .keep_alive_while_idle(true);
    match tls {
        // Checked when the configuration was read (credentials::tls); a config that tonic
        // refuses here leaves the endpoint plain, and the replica's TLS handshake fails loudly.
        Some(tls) => endpoint.clone().tls_config(tls.clone()).unwrap_or(endpoint),
        None => endpoint,
    }
}

/// Whether a failed call may be tried again on another replica: the failure came from the way
/// there (no connection, connection refused or lost, stream refused or reset before an answer),
/// not from the service deciding. See the module documentation for why this is safe.
pub fn retryable(status: &tonic::Status) -> bool {
    if status
        .get_details_error_info()
        .is_some_and(|info| info.domain == ERROR_DOMAIN)
    {
        return false;
    }
    match status.code() {
        Code::Unavailable => true,
        // Made here from a transport error (the status carries it as its source), not received
        // from the service: the connection broke under the call.
        Code::Unknown | Code::Internal | Code::Cancelled => {
            std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

#[derive(Clone)]
pub struct Upstream {
    handshake: HandshakeClient<ToService>,
    engine_events: EngineEventsClient<ToService>,
    /// Push devices are registered through the user directory.
    users: UserDirectoryClient<ToService>,
    endpoints: Endpoints,
    rpc_timeout: Duration,
}

impl Upstream {
    pub fn new(channel: ToService, endpoints: Endpoints, rpc_timeout: Duration) -> Self {
        Self {
            handshake: HandshakeClient::new(channel.clone()),
            engine_events: EngineEventsClient::new(channel.clone()),
            users: UserDirectoryClient::new(channel),
            endpoints,
            rpc_timeout,
        }
    }

    /// Passes a media engine's webhook to the service (which verifies and applies it).
    #[tracing::instrument(name = "gateway.engine_webhook", skip_all, fields(videochat.engine = %webhook.engine))]
    pub async fn deliver_webhook(
        &self,
        webhook: pb::EngineWebhook,
    ) -> Result<pb::EngineWebhookResponse, tonic::Status> {
        let mut client = self.engine_events.clone();
        client
            .deliver_webhook(self.request(webhook, self.rpc_timeout))
            .await
            .map(tonic::Response::into_inner)
    }

    /// A request with what is left of the deadline and the current span's trace context in its
    /// metadata.
    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
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
            otel.name = %format!("videochat.handshake.v1.{}/{method}", rpc_service(&inbound.request)),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %format!("videochat.handshake.v1.{}", rpc_service(&inbound.request)),
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            rpc.attempts = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .send_with_retries(actor, inbound)
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

    /// Sends the call, and again on another replica while it fails for want of one
    /// ([`retryable`]), within one deadline.
    async fn send_with_retries(
        &self,
        actor: Option<pb::Actor>,
        inbound: &Inbound,
    ) -> Result<Option<Value>, tonic::Status> {
        let deadline = Instant::now() + self.rpc_timeout;
        let mut pause = FIRST_RETRY_PAUSE;
        let mut attempt = 1;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // The outer timeout also covers the wait for a replica in the balancer's queue,
            // which the gRPC deadline (applied per connection) does not.
            let result =
                match tokio::time::timeout(left, self.send(actor.clone(), &inbound.request, left))
                    .await
                {
                    Ok(result) => result,
                    Err(_) => Err(tonic::Status::deadline_exceeded(
                        "no answer from the handshake service within the deadline",
                    )),
                };
            let retry = match &result {
                Err(status) if attempt < ATTEMPTS && retryable(status) => {
                    deadline.saturating_duration_since(Instant::now()) > pause
                }
                _ => false,
            };
            if !retry {
                Span::current().record("rpc.attempts", attempt);
                return result;
            }
            if let Err(status) = &result {
                tracing::info!(attempt, code = ?status.code(), message = status.message(), "handshake call found no replica; retrying");
            }
            metrics::counter!("videochat_gateway_rpc_retries_total", "type" => inbound.kind)
                .increment(1);
            self.endpoints.suspect();
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        }
    }

    async fn send(
        &self,
        actor: Option<pb::Actor>,
        request: &ClientRequest,
        timeout: Duration,
    ) -> Result<Option<Value>, tonic::Status> {
        let mut client = self.handshake.clone();
        match request {
            ClientRequest::RequestDirectVideochat { target_user } => client
                .request_direct_videochat(self.request(
                    pb::RequestDirectVideochatRequest {
                        actor,
                        target_user: target_user.clone(),
                        engine: String::new(),
                    },
                    timeout,
                ))
                .await
                .map(|r| {
                    Some(json!({ "videochatRequestId": r.into_inner().videochat_request_id }))
                }),
            ClientRequest::Invite {
                target_user,
                videochat_id,
            } => client
                .invite(self.request(
                    pb::InviteRequest {
                        actor,
                        target_user: target_user.clone(),
                        videochat_id: videochat_id.clone(),
                    },
                    timeout,
                ))
                .await
                .map(|r| {
                    Some(json!({ "videochatRequestId": r.into_inner().videochat_request_id }))
                }),
            ClientRequest::AcceptVideochatRequest {
                videochat_request_id,
            } => client
                .accept_videochat_request(self.request(
                    pb::AcceptVideochatRequestRequest {
                        actor,
                        videochat_request_id: videochat_request_id.clone(),
                    },
                    timeout,
                ))
                .await
                .map(|r| r.into_inner().credentials.as_ref().map(frames::credentials)),
            ClientRequest::DeclineVideochatRequest {
                videochat_request_id,
            } => client
                .decline_videochat_request(self.request(
                    pb::DeclineVideochatRequestRequest {
                        actor,
                        videochat_request_id: videochat_request_id.clone(),
                    },
                    timeout,
                ))
                .await
                .map(|_| None),
            ClientRequest::MergeToVideochat {
                videochat_id,
                videochat_request_id,
            } => client
                .merge_to_videochat(self.request(
                    pb::MergeToVideochatRequest {
                        actor,
                        videochat_id: videochat_id.clone(),
                        videochat_request_id: videochat_request_id.clone(),
                    },
                    timeout,
                ))
                .await
                .map(|_| None),
            ClientRequest::ListCalls { before, limit } => client
                .list_calls(self.request(
                    pb::ListCallsRequest {
                        user_id: user_of(actor),
                        before: *before,
                        limit: *limit,
                        // The user is looking at their calls: missed ones count as seen.
                        acknowledge: true,
                    },
                    timeout,
                ))
                .await
                .map(|r| Some(frames::call_page(&r.into_inner()))),
            ClientRequest::RegisterPushDevice(device) => self
                .users
                .clone()
                .register_push_device(self.request(
                    pb::RegisterPushDeviceRequest {
                        user_id: user_of(actor),
                        platform: device.platform.to_owned(),
                        token: device.token.clone(),
                        voip: device.voip,
                    },
                    timeout,
                ))
                .await
                .map(|_| Some(json!({}))),
            ClientRequest::UnregisterPushDevice { token } => self
                .users
                .clone()
                .unregister_push_device(self.request(
                    pb::UnregisterPushDeviceRequest {
                        user_id: user_of(actor),
                        token: token.clone(),
                    },
                    timeout,
                ))
                .await
                .map(|_| Some(json!({}))),
        }
    }
}

/// The user a directory call is for: the socket's own (the actor the gateway authenticated).
fn user_of(actor: Option<pb::Actor>) -> String {
    actor.map(|a| a.user_id).unwrap_or_default()
}

fn rpc_service(request: &ClientRequest) -> &'static str {
    match request {
        ClientRequest::RegisterPushDevice(_) | ClientRequest::UnregisterPushDevice { .. } => {
            "UserDirectory"
        }
        _ => "Handshake",
    }
}

fn rpc_method(request: &ClientRequest) -> &'static str {
    match request {
        ClientRequest::RequestDirectVideochat { .. } => "RequestDirectVideochat",
        ClientRequest::Invite { .. } => "Invite",
        ClientRequest::AcceptVideochatRequest { .. } => "AcceptVideochatRequest",
        ClientRequest::DeclineVideochatRequest { .. } => "DeclineVideochatRequest",
        ClientRequest::MergeToVideochat { .. } => "MergeToVideochat",
        ClientRequest::ListCalls { .. } => "ListCalls",
        ClientRequest::RegisterPushDevice(_) => "RegisterPushDevice",
        ClientRequest::UnregisterPushDevice { .. } => "UnregisterPushDevice",
    }
}
