//! One delivery attempt: sign the body the Standard Webhooks way and POST it.
//!
//! Signing uses the `standardwebhooks` crate (HMAC-SHA256 over `id.timestamp.body`, header
//! `webhook-signature: v1,<base64>`), so any Standard Webhooks library verifies it. The client is
//! hyper's, over rustls for https:// endpoints (the host's root certificates); connections are
//! kept alive between attempts, and each attempt has one deadline covering connect, send and
//! reading the (discarded, bounded) answer.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::settings::{WebhookConfigError, WebhookSettings};
use crate::store::webhooks::Delivery;

/// Most bytes of an endpoint's answer read (and thrown away).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why an attempt did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Transport(String),
    #[error("cannot sign: {0}")]
    Sign(String),
    #[error("bad request: {0}")]
    Request(String),
}

/// Signs and sends deliveries; cheap to clone.
#[derive(Clone)]
pub struct Sender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    signer: Arc<standardwebhooks::Webhook>,
    timeout: Duration,
}

impl Sender {
    pub fn new(settings: &WebhookSettings) -> Result<Self, WebhookConfigError> {
        let tls = match rustls_roots() {
            Ok(config) => config,
            Err(error) if settings.needs_tls() => {
                return Err(WebhookConfigError::NoRootCertificates(error));
            }
            // Only http:// endpoints: no certificate will ever be checked.
            Err(_) => rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            client,
            signer: settings.signer.clone(),
            timeout: settings.timeout,
        })
    }

    /// Signs `delivery` now and POSTs it; `Ok` is a 2xx answer.
    pub async fn send(&self, delivery: &Delivery) -> Result<u16, AttemptError> {
        let timestamp = crate::service::now_ms() / 1000;
        let signature = self
            .signer
            .sign(&delivery.id, timestamp, delivery.payload.as_bytes())
            .map_err(|e| AttemptError::Sign(e.to_string()))?;
        let request = http::Request::post(&delivery.endpoint)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "videochat-handshake-webhooks")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &delivery.id)
            .header(
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                timestamp.to_string(),
            )
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(Full::new(Bytes::from(delivery.payload.clone())))
            .map_err(|e| AttemptError::Request(e.to_string()))?;
        let attempt = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| AttemptError::Transport(error_chain(&e)))?;
            let status = response.status();
            // Read the answer so the connection can be reused; its content does not matter.
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            if status.is_success() {
                Ok(status.as_u16())
            } else {
                Err(AttemptError::Status(status.as_u16()))
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| AttemptError::Timeout(self.timeout))?
    }
}

/// The host's root certificates for https:// endpoints.
fn rustls_roots() -> Result<rustls::ClientConfig, String> {
    use hyper_rustls::ConfigBuilderExt as _;
    Ok(rustls::ClientConfig::builder()
        .with_native_roots()
        .map_err(|e| e.to_string())?
        .with_no_client_auth())
}

/// An error with its sources, for `last_error` and logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
