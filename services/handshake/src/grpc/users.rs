//! `videochat.handshake.v1.UserDirectory`: full profiles for internal services.

use tonic::{Request, Response, Status};
use videochat_proto::v1 as pb;
use videochat_proto::v1::user_directory_server;

use super::convert::{parse_id, user_from_pb, user_to_pb};
use super::status::invalid;
use crate::domain::{PushDevice, PushPlatform, PushToken, UserId};
use crate::service::Handshake;

pub struct UserDirectoryApi {
    handshake: Handshake,
}

impl UserDirectoryApi {
    pub fn new(handshake: Handshake) -> Self {
        Self { handshake }
    }
}

#[tonic::async_trait]
impl user_directory_server::UserDirectory for UserDirectoryApi {
    async fn upsert_user(
        &self,
        request: Request<pb::UpsertUserRequest>,
    ) -> Result<Response<pb::UpsertUserResponse>, Status> {
        let user = request
            .into_inner()
            .user
            .ok_or_else(|| invalid("user", "is required"))?;
        let user = user_from_pb(user)?;
        self.handshake.upsert_user(&user).await?;
        Ok(Response::new(pb::UpsertUserResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let id = parse_id("user_id", request.into_inner().user_id, UserId::parse)?;
        let (user, available) = self.handshake.user(&id).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_to_pb(&user)),
            available,
        }))
    }

    async fn register_push_device(
        &self,
        request: Request<pb::RegisterPushDeviceRequest>,
    ) -> Result<Response<pb::RegisterPushDeviceResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", r.user_id, UserId::parse)?;
        let platform = PushPlatform::parse(&r.platform)
            .ok_or_else(|| invalid("platform", "must be one of apns, fcm, webpush"))?;
        let token = PushToken::parse(r.token).map_err(|e| invalid("token", e))?;
        let device = PushDevice {
            platform,
            token,
            voip: r.voip,
        };
        self.handshake.register_push_device(&user, &device).await?;
        Ok(Response::new(pb::RegisterPushDeviceResponse {}))
    }

    async fn unregister_push_device(
        &self,
        request: Request<pb::UnregisterPushDeviceRequest>,
    ) -> Result<Response<pb::UnregisterPushDeviceResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", r.user_id, UserId::parse)?;
        let token = PushToken::parse(r.token).map_err(|e| invalid("token", e))?;
        let removed = self.handshake.unregister_push_device(&user, &token).await?;
        Ok(Response::new(pb::UnregisterPushDeviceResponse { removed }))
    }
}
