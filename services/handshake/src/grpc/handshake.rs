//! `videochat.handshake.v1.Handshake`: thin adapter from RPCs to [`Handshake::execute`].

use tonic::{Request, Response, Status};
use videochat_proto::v1 as pb;
use videochat_proto::v1::handshake_server;

use super::convert::{actor, call_to_pb, credentials_to_pb, parse_id, ring_to_pb};
use super::status::invalid;
use crate::domain::{RequestId, UserId, VideochatId, VideochatMode};
use crate::engine::EngineKind;
use crate::machine::{Command, Reply};
use crate::service::Handshake;

pub struct HandshakeApi {
    handshake: Handshake,
}

impl HandshakeApi {
    pub fn new(handshake: Handshake) -> Self {
        Self { handshake }
    }

    async fn run<T>(
        &self,
        request: Request<T>,
        build: impl FnOnce(T) -> Result<(pb::Actor, Command), Status>,
    ) -> Result<Reply, Status> {
        // Events this request causes are linked to this span when they are delivered.
        let traceparent = videochat_telemetry::traceparent(&tracing::Span::current());
        let (raw_actor, command) = build(request.into_inner())?;
        let (user, key) = actor(Some(raw_actor))?;
        Ok(self
            .handshake
            .execute(&user, &key, &command, &traceparent)
            .await?)
    }
}

fn required_actor(actor: Option<pb::Actor>) -> Result<pb::Actor, Status> {
    actor.ok_or_else(|| invalid("actor", "is required"))
}

fn engine(field: &'static str, value: &str) -> Result<Option<EngineKind>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|e| invalid(field, e))
}

fn request_id_reply(reply: Reply) -> Result<String, Status> {
    match reply {
        Reply::RequestId(id) => Ok(id.to_string()),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

#[tonic::async_trait]
impl handshake_server::Handshake for HandshakeApi {
    async fn request_direct_videochat(
        &self,
        request: Request<pb::RequestDirectVideochatRequest>,
    ) -> Result<Response<pb::RequestDirectVideochatResponse>, Status> {
        let reply = self
            .run(request, |r| {
                Ok((
                    required_actor(r.actor)?,
                    Command::RequestDirect {
                        target: parse_id("target_user", r.target_user, UserId::parse)?,
                        engine: engine("engine", &r.engine)?,
                    },
                ))
            })
            .await?;
        Ok(Response::new(pb::RequestDirectVideochatResponse {
            videochat_request_id: request_id_reply(reply)?,
        }))
    }

    async fn invite(
        &self,
        request: Request<pb::InviteRequest>,
    ) -> Result<Response<pb::InviteResponse>, Status> {
        let reply = self
            .run(request, |r| {
                Ok((
                    required_actor(r.actor)?,
                    Command::Invite {
                        target: parse_id("target_user", r.target_user, UserId::parse)?,
                        videochat: parse_id("videochat_id", r.videochat_id, VideochatId::parse)?,
                    },
                ))
            })
            .await?;
        Ok(Response::new(pb::InviteResponse {
            videochat_request_id: request_id_reply(reply)?,
        }))
    }

    async fn accept_videochat_request(
        &self,
        request: Request<pb::AcceptVideochatRequestRequest>,
    ) -> Result<Response<pb::AcceptVideochatRequestResponse>, Status> {
        let reply = self
            .run(request, |r| {
                Ok((
                    required_actor(r.actor)?,
                    Command::Accept {
                        request: parse_id(
                            "videochat_request_id",
                            r.videochat_request_id,
                            RequestId::parse,
                        )?,
                    },
                ))
            })
            .await?;
        match reply {
            Reply::Credentials(credentials) => {
                Ok(Response::new(pb::AcceptVideochatRequestResponse {
                    credentials: Some(credentials_to_pb(&credentials)),
                }))
            }
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn decline_videochat_request(
        &self,
        request: Request<pb::DeclineVideochatRequestRequest>,
    ) -> Result<Response<pb::DeclineVideochatRequestResponse>, Status> {
        self.run(request, |r| {
            Ok((
                required_actor(r.actor)?,
                Command::Decline {
                    request: parse_id(
                        "videochat_request_id",
                        r.videochat_request_id,
                        RequestId::parse,
                    )?,
                },
            ))
        })
        .await?;
        Ok(Response::new(pb::DeclineVideochatRequestResponse {}))
    }

    async fn merge_to_videochat(
        &self,
        request: Request<pb::MergeToVideochatRequest>,
    ) -> Result<Response<pb::MergeToVideochatResponse>, Status> {
        self.run(request, |r| {
            Ok((
                required_actor(r.actor)?,
                Command::Merge {
                    videochat: parse_id("videochat_id", r.videochat_id, VideochatId::parse)?,
                    request: parse_id(
                        "videochat_request_id",
                        r.videochat_request_id,
                        RequestId::parse,
                    )?,
                },
            ))
        })
        .await?;
        Ok(Response::new(pb::MergeToVideochatResponse {}))
    }

    async fn list_pending_rings(
        &self,
        request: Request<pb::ListPendingRingsRequest>,
    ) -> Result<Response<pb::ListPendingRingsResponse>, Status> {
        let user = parse_id("user_id", request.into_inner().user_id, UserId::parse)?;
        let rings = self.handshake.ringing_for(&user).await?;
        Ok(Response::new(pb::ListPendingRingsResponse {
            rings: rings.iter().map(ring_to_pb).collect(),
        }))
    }

    async fn create_videochat(
        &self,
        request: Request<pb::CreateVideochatRequest>,
    ) -> Result<Response<pb::CreateVideochatResponse>, Status> {
        let r = request.into_inner();
        let owner = parse_id("owner_user_id", r.owner_user_id, UserId::parse)?;
        let mode = if r.videochat_mode.is_empty() {
            VideochatMode::Videochat
        } else {
            VideochatMode::parse(&r.videochat_mode).ok_or_else(|| {
                invalid(
                    "videochat_mode",
                    "must be videochat, conference or networkConference",
                )
            })?
        };
        let engine = engine("engine", &r.engine)?;
        let credentials = self
            .handshake
            .create_videochat(&owner, mode, engine)
            .await?;
        Ok(Response::new(pb::CreateVideochatResponse {
            credentials: Some(credentials_to_pb(&credentials)),
        }))
    }

    async fn list_calls(
        &self,
        request: Request<pb::ListCallsRequest>,
    ) -> Result<Response<pb::ListCallsResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", r.user_id, UserId::parse)?;
        let page = self
            .handshake
            .list_calls(&user, r.before, r.limit, r.acknowledge)
            .await?;
        Ok(Response::new(pb::ListCallsResponse {
            calls: page.calls.iter().map(call_to_pb).collect(),
            next: page.next,
            missed_count: page.missed_count,
        }))
    }
}
