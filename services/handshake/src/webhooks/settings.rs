//! The webhook settings, checked once at start-up: every URL parsed, the secret decoded, the
//! event filter known. A mistake stops the replica with a message naming the setting, instead
//! of surfacing as deliveries that fail for a day.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::config::WebhookConfig;

use super::events::{CALL_EVENTS, Routes};

/// Why the webhook settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("{setting}: {url:?} is not an http:// or https:// URL ({reason})")]
    BadUrl {
        setting: &'static str,
        url: String,
        reason: String,
    },
    #[error(
        "VIDEOCHAT_WEBHOOK_SECRET is required when VIDEOCHAT_WEBHOOK_URL or \
         VIDEOCHAT_PUSH_WEBHOOK_URL is set (Standard Webhooks form: whsec_ and base64 of at \
         least 24 random bytes)"
    )]
    MissingSecret,
    #[error("VIDEOCHAT_WEBHOOK_SECRET must be whsec_ followed by base64 ({0})")]
    BadSecret(String),
    #[error(
        "VIDEOCHAT_WEBHOOK_EVENTS names {0:?}, which is not a call-status event (one of {events})",
        events = CALL_EVENTS.join(", ")
    )]
    UnknownEvent(String),
    #[error(
        "an https:// webhook endpoint is configured but no root certificates were found on \
         this host ({0})"
    )]
    NoRootCertificates(String),
}

/// Everything the webhook side of a replica needs, validated.
#[derive(Clone)]
pub struct WebhookSettings {
    /// Where each kind of webhook goes (used by the write path).
    pub routes: Arc<Routes>,
    /// The signing key (from `whsec_…`).
    pub signer: Arc<standardwebhooks::Webhook>,
    pub max_age: Duration,
    pub timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub concurrency: usize,
    pub poll: Duration,
    pub retention: Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("routes", &self.routes)
            .field("signer", &"<redacted>")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl WebhookSettings {
    /// `None` when no webhook endpoint is configured (then nothing about webhooks runs).
    pub fn from_config(config: &WebhookConfig) -> Result<Option<Self>, WebhookConfigError> {
        let call_endpoints = config
            .webhook_url
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .map(|u| check_url("VIDEOCHAT_WEBHOOK_URL", u))
            .collect::<Result<Vec<_>, _>>()?;
        let push_endpoint = config
            .push_webhook_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| check_url("VIDEOCHAT_PUSH_WEBHOOK_URL", u))
            .transpose()?;
        if call_endpoints.is_empty() && push_endpoint.is_none() {
            return Ok(None);
        }
        let mut events = BTreeSet::new();
        for event in config
            .webhook_events
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
        {
            let known = CALL_EVENTS
                .iter()
                .find(|k| **k == event)
                .ok_or_else(|| WebhookConfigError::UnknownEvent(event.to_owned()))?;
            events.insert(*known);
        }
        let secret = config
            .webhook_secret
            .as_ref()
            .map(|s| s.expose().trim())
            .filter(|s| !s.is_empty())
            .ok_or(WebhookConfigError::MissingSecret)?;
        let signer = signer(secret)?;
        Ok(Some(Self {
            routes: Arc::new(Routes {
                call_endpoints,
                events: (!events.is_empty()).then_some(events),
                push_endpoint,
            }),
            signer: Arc::new(signer),
            max_age: Duration::from_secs(config.webhook_max_age_s),
            timeout: Duration::from_millis(config.webhook_timeout_ms.max(1)),
            backoff_min: Duration::from_millis(config.webhook_backoff_min_ms.max(1)),
            backoff_max: Duration::from_millis(
                config
                    .webhook_backoff_max_ms
                    .max(config.webhook_backoff_min_ms.max(1)),
            ),
            concurrency: config.webhook_concurrency.max(1),
            poll: Duration::from_millis(config.webhook_poll_ms.max(10)),
            retention: Duration::from_secs(config.webhook_retention_s),
        }))
    }

    /// Whether any endpoint is an https:// one (the client then needs root certificates).
    pub fn needs_tls(&self) -> bool {
        self.routes
            .call_endpoints
            .iter()
            .chain(&self.routes.push_endpoint)
            .any(|u| u.starts_with("https://"))
    }
}

/// A `whsec_…` secret as the `standardwebhooks` signer.
fn signer(secret: &str) -> Result<standardwebhooks::Webhook, WebhookConfigError> {
    use base64::Engine as _;
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        return Err(WebhookConfigError::BadSecret("no whsec_ prefix".into()));
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| WebhookConfigError::BadSecret(e.to_string()))?;
    if key.len() < 16 {
        return Err(WebhookConfigError::BadSecret(format!(
            "the key is {} bytes; use at least 24 random bytes",
            key.len()
        )));
    }
    standardwebhooks::Webhook::new(secret).map_err(|e| WebhookConfigError::BadSecret(e.to_string()))
}

fn check_url(setting: &'static str, url: &str) -> Result<String, WebhookConfigError> {
    let bad = |reason: String| WebhookConfigError::BadUrl {
        setting,
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("the scheme must be http or https".into())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WebhookConfig {
        WebhookConfig {
            webhook_url: vec!["http://127.0.0.1:9/hook".into()],
            webhook_events: vec![],
            push_webhook_url: None,
            webhook_secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned().into()),
            webhook_max_age_s: 86_400,
            webhook_timeout_ms: 10_000,
            webhook_backoff_min_ms: 5_000,
            webhook_backoff_max_ms: 3_600_000,
            webhook_concurrency: 32,
            webhook_poll_ms: 1_000,
            webhook_retention_s: 604_800,
        }
    }

    #[test]
    fn nothing_configured_means_no_webhooks() {
        let mut c = config();
        c.webhook_url.clear();
        c.webhook_secret = None;
        assert!(WebhookSettings::from_config(&c).unwrap().is_none());
    }

    #[test]
    fn bad_settings_are_refused_naming_the_setting() {
        let mut c = config();
        c.webhook_url = vec!["ftp://x/y".into()];
        let e = WebhookSettings::from_config(&c).unwrap_err();
        assert!(e.to_string().contains("VIDEOCHAT_WEBHOOK_URL"), "{e}");
        let mut c = config();
        c.push_webhook_url = Some("not a url".into());
        let e = WebhookSettings::from_config(&c).unwrap_err();
        assert!(e.to_string().contains("VIDEOCHAT_PUSH_WEBHOOK_URL"), "{e}");
        let mut c = config();
        c.webhook_secret = Some("plain-secret".to_owned().into());
        assert!(matches!(
            WebhookSettings::from_config(&c),
            Err(WebhookConfigError::BadSecret(_))
        ));
        c.webhook_secret = Some("whsec_!!!notbase64".to_owned().into());
        assert!(matches!(
            WebhookSettings::from_config(&c),
            Err(WebhookConfigError::BadSecret(_))
        ));
        c.webhook_secret = None;
        assert!(matches!(
            WebhookSettings::from_config(&c),
            Err(WebhookConfigError::MissingSecret)
        ));
        let mut c = config();
        c.webhook_events = vec!["call.missed".into(), "call.exploded".into()];
        let e = WebhookSettings::from_config(&c).unwrap_err();
        assert!(e.to_string().contains("call.exploded"), "{e}");
    }

    #[test]
    fn a_good_configuration_is_read_whole() {
        let mut c = config();
        c.webhook_url = vec!["http://a/h".into(), " https://b/h ".into()];
        c.webhook_events = vec!["call.missed".into()];
        c.push_webhook_url = Some("http://push/ring".into());
        let s = WebhookSettings::from_config(&c).unwrap().unwrap();
        assert_eq!(s.routes.call_endpoints, vec!["http://a/h", "https://b/h"]);
        assert_eq!(s.routes.push_endpoint.as_deref(), Some("http://push/ring"));
        assert!(s.needs_tls());
        assert!(!format!("{s:?}").contains("MfKQ"));
    }
}
