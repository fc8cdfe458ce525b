//! `videochat.handshake.v1.UserDirectory`: full profiles for internal services.

use tonic::{Request, Response, Status};
use videochat_proto::v1 as pb;
use videochat_proto::v1::user_directory_server;

use super::convert::{parse_id, user_from_pb, user_to_pb};
use super::status::invalid;
use crate::domain::UserId;
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
}
