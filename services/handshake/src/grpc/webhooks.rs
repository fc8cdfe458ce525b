//! `videochat.handshake.v1.WebhookDeliveries`: failed webhooks listed and sent again, for
//! operators and internal services (docs/webhooks.md, "Failures").

use tonic::{Request, Response, Status};
use videochat_proto::v1 as pb;
use videochat_proto::v1::webhook_deliveries_server;

use super::status::invalid;
use crate::error::HandshakeError;
use crate::service::{Handshake, now_ms};
use crate::store::webhooks::{Delivery, RetrySelection};

/// Most deliveries one list returns.
const MAX_LIST: u32 = 1_000;
const DEFAULT_LIST: u32 = 100;
/// Most ids one retry names.
const MAX_RETRY_IDS: usize = 1_000;

pub struct WebhookDeliveriesApi {
    handshake: Handshake,
}

impl WebhookDeliveriesApi {
    pub fn new(handshake: Handshake) -> Self {
        Self { handshake }
    }
}

fn to_pb(d: Delivery) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        id: d.id,
        endpoint: d.endpoint,
        event_type: d.event_type,
        payload: d.payload,
        created_at: d.created_at_ms,
        attempts: d.attempts,
        last_error: d.last_error.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl webhook_deliveries_server::WebhookDeliveries for WebhookDeliveriesApi {
    async fn list_failed_deliveries(
        &self,
        request: Request<pb::ListFailedDeliveriesRequest>,
    ) -> Result<Response<pb::ListFailedDeliveriesResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => DEFAULT_LIST,
            n => n.min(MAX_LIST),
        };
        let deliveries = self
            .handshake
            .store()
            .failed_deliveries(i64::from(limit))
            .await
            .map_err(HandshakeError::from)?;
        Ok(Response::new(pb::ListFailedDeliveriesResponse {
            deliveries: deliveries.into_iter().map(to_pb).collect(),
        }))
    }

    async fn retry_deliveries(
        &self,
        request: Request<pb::RetryDeliveriesRequest>,
    ) -> Result<Response<pb::RetryDeliveriesResponse>, Status> {
        let r = request.into_inner();
        let which = match (r.all_failed, r.ids.is_empty()) {
            (true, true) => RetrySelection::AllFailed,
            (true, false) => return Err(invalid("ids", "give ids or all_failed, not both")),
            (false, true) => return Err(invalid("ids", "name the deliveries, or set all_failed")),
            (false, false) if r.ids.len() > MAX_RETRY_IDS => {
                return Err(invalid("ids", format!("at most {MAX_RETRY_IDS} at once")));
            }
            (false, false) => RetrySelection::Ids(r.ids),
        };
        let retried = self
            .handshake
            .store()
            .retry_deliveries(&which, now_ms())
            .await
            .map_err(HandshakeError::from)?;
        tracing::info!(retried, "failed webhooks sent again on request");
        self.handshake.wake_webhooks();
        Ok(Response::new(pb::RetryDeliveriesResponse { retried }))
    }
}
