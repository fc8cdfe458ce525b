//! `videochat.handshake.v1.EngineEvents`: thin adapter from a forwarded webhook to
//! [`Handshake::engine_webhook`].

use std::collections::HashMap;

use tonic::{Request, Response, Status};
use videochat_proto::v1 as pb;
use videochat_proto::v1::engine_events_server;

use crate::engine::events::Webhook;
use crate::service::Handshake;

pub struct EngineEventsApi {
    handshake: Handshake,
}

impl EngineEventsApi {
    pub fn new(handshake: Handshake) -> Self {
        Self { handshake }
    }
}

#[tonic::async_trait]
impl engine_events_server::EngineEvents for EngineEventsApi {
    async fn deliver_webhook(
        &self,
        request: Request<pb::EngineWebhook>,
    ) -> Result<Response<pb::EngineWebhookResponse>, Status> {
        let r = request.into_inner();
        let headers: HashMap<String, String> = r
            .headers
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        let webhook = Webhook {
            headers: &headers,
            body: &r.body,
            url: &r.url,
        };
        let (received, applied) = self.handshake.engine_webhook(&r.engine, &webhook).await?;
        Ok(Response::new(pb::EngineWebhookResponse {
            event: received.name,
            applied,
        }))
    }
}
