//! Engine credentials: the seam between a videochat and the media engine that carries it.
//!
//! Every videochat runs on one engine (LiveKit, Agora or Twilio). When a participant joins, the
//! handshake asks that engine for the participant's credentials: a token the engine's own
//! servers accept, plus the engine-specific extras (server URL, app id). Each engine lives in one
//! file implementing [`Engine`]; [`Engines`] holds the configured ones. Adding an engine is one
//! new file and one registration in [`Engines::from_config`].

pub mod agora;
pub mod events;
pub mod livekit;
pub mod twilio;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The engines of the API text, by their wire names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EngineKind {
    Livekit,
    Agora,
    Twilio,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Livekit => "livekit",
            EngineKind::Agora => "agora",
            EngineKind::Twilio => "twilio",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EngineKind {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "livekit" => Ok(EngineKind::Livekit),
            "agora" => Ok(EngineKind::Agora),
            "twilio" => Ok(EngineKind::Twilio),
            other => Err(EngineError::UnknownEngine(other.to_owned())),
        }
    }
}

/// What one participant may do in one room, in engine-neutral terms.
#[derive(Clone, Debug)]
pub struct Grant<'a> {
    /// The engine room (LiveKit room, Agora channel, Twilio room name).
    pub room: &'a str,
    /// The participant's identity: the user id.
    pub identity: &'a str,
    /// Numeric identity unique within the videochat (Agora needs one).
    pub uid: u32,
    /// Display name, for engines that show one.
    pub display_name: &'a str,
    /// May send audio/video.
    pub can_publish: bool,
    /// May receive the others' audio/video.
    pub can_subscribe: bool,
    /// Unix seconds at which the token is issued; passed in so tokens are reproducible in tests.
    pub issued_at: u64,
    /// How long the token stays valid.
    pub ttl: Duration,
}

/// What an engine hands a participant, beside the room and identity the handshake already knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineCredentials {
    /// The join token.
    pub token: String,
    /// Server URL the client connects to (`videochatUrl`); empty when the engine has none.
    pub url: String,
    /// Application id (`videochatAppId`); empty when the engine has none.
    pub app_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown videochat engine {0:?} (expected livekit, agora or twilio)")]
    UnknownEngine(String),
    #[error("engine {engine} is not configured: set {missing}")]
    NotConfigured { engine: EngineKind, missing: String },
    #[error("engine {engine} could not mint a token: {reason}")]
    Mint { engine: EngineKind, reason: String },
}

/// One media engine able to mint join credentials.
pub trait Engine: Send + Sync + fmt::Debug {
    fn kind(&self) -> EngineKind;

    /// Mint the credentials for one participant. Pure computation: no I/O.
    fn credentials(&self, grant: &Grant<'_>) -> Result<EngineCredentials, EngineError>;
}

/// The configured engines and the deployment default.
#[derive(Clone, Debug)]
pub struct Engines {
    default: EngineKind,
    engines: BTreeMap<EngineKind, Arc<dyn Engine>>,
    token_ttl: Duration,
}

impl Engines {
    /// Builds every engine whose settings are present, and fails if the default engine (or an
    /// engine with only some of its settings) is not fully configured, naming what is missing.
    pub fn from_config(config: &EngineConfig) -> Result<Self, EngineError> {
        let mut engines: BTreeMap<EngineKind, Arc<dyn Engine>> = BTreeMap::new();
        if let Some(livekit) = livekit::LivekitEngine::from_config(config)? {
            engines.insert(EngineKind::Livekit, Arc::new(livekit));
        }
        if let Some(agora) = agora::AgoraEngine::from_config(config)? {
            engines.insert(EngineKind::Agora, Arc::new(agora));
        }
        if let Some(twilio) = twilio::TwilioEngine::from_config(config)? {
            engines.insert(EngineKind::Twilio, Arc::new(twilio));
        }
        let default = config.engine;
        if !engines.contains_key(&default) {
            return Err(EngineError::NotConfigured {
                engine: default,
                missing: missing_settings(default),
            });
        }
        Ok(Self {
            default,
            engines,
            token_ttl: Duration::from_secs(config.token_ttl_s),
        })
    }

    pub fn default_kind(&self) -> EngineKind {
        self.default
    }

    pub fn token_ttl(&self) -> Duration {
        self.token_ttl
    }

    /// The engine for a videochat, or an error when that engine is not configured here.
    pub fn get(&self, kind: EngineKind) -> Result<&dyn Engine, EngineError> {
        self.engines
            .get(&kind)
            .map(|engine| engine.as_ref())
            .ok_or_else(|| EngineError::NotConfigured {
                engine: kind,
                missing: missing_settings(kind),
            })
    }

    pub fn is_configured(&self, kind: EngineKind) -> bool {
        self.engines.contains_key(&kind)
    }
}

fn missing_settings(kind: EngineKind) -> String {
    match kind {
        EngineKind::Livekit => "LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
        EngineKind::Agora => "AGORA_APP_ID and AGORA_APP_CERTIFICATE",
        EngineKind::Twilio => "TWILIO_ACCOUNT_SID, TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET",
    }
    .to_owned()
}

/// Engine settings, under the names each engine's own documentation uses.
#[derive(Clone, clap::Args)]
pub struct EngineConfig {
    /// Engine for new videochats when the caller does not choose one.
    #[arg(long = "engine", env = "VIDEOCHAT_ENGINE", default_value = "livekit", value_parser = parse_engine)]
    pub engine: EngineKind,
    /// Lifetime of minted join tokens, in seconds.
    #[arg(long, env = "VIDEOCHAT_TOKEN_TTL_S", default_value_t = 6 * 3600)]
    pub token_ttl_s: u64,
    /// LiveKit server URL handed to clients as `videochatUrl`.
    #[arg(long, env = "LIVEKIT_URL", default_value = "ws://localhost:7880")]
    pub livekit_url: Option<String>,
    /// LiveKit API key (the dev server's key is `devkey`).
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
    pub livekit_api_key: Option<String>,
    /// LiveKit API secret (the dev server's secret is `secret`).
    #[arg(
        long,
        env = "LIVEKIT_API_SECRET",
        default_value = "secret",
        hide_env_values = true
    )]
    pub livekit_api_secret: Option<String>,
    /// Agora project App ID.
    #[arg(long, env = "AGORA_APP_ID")]
    pub agora_app_id: Option<String>,
    /// Agora App Certificate (signs AccessToken2 tokens).
    #[arg(long, env = "AGORA_APP_CERTIFICATE", hide_env_values = true)]
    pub agora_app_certificate: Option<String>,
    /// Twilio account SID (`AC…`).
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,
    /// Twilio API key SID (`SK…`).
    #[arg(long, env = "TWILIO_API_KEY_SID")]
    pub twilio_api_key_sid: Option<String>,
    /// Twilio API key secret.
    #[arg(long, env = "TWILIO_API_KEY_SECRET", hide_env_values = true)]
    pub twilio_api_key_secret: Option<String>,
}

fn parse_engine(s: &str) -> Result<EngineKind, EngineError> {
    s.parse()
}

impl fmt::Debug for EngineConfig {
    /// Secrets are redacted: this struct is logged at start-up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("EngineConfig")
            .field("engine", &self.engine)
            .field("token_ttl_s", &self.token_ttl_s)
            .field("livekit_url", &self.livekit_url)
            .field("livekit_api_key", &self.livekit_api_key)
            .field("livekit_api_secret", &redact(&self.livekit_api_secret))
            .field("agora_app_id", &self.agora_app_id)
            .field(
                "agora_app_certificate",
                &redact(&self.agora_app_certificate),
            )
            .field("twilio_account_sid", &self.twilio_account_sid)
            .field("twilio_api_key_sid", &self.twilio_api_key_sid)
            .field(
                "twilio_api_key_secret",
                &redact(&self.twilio_api_key_secret),
            )
            .finish()
    }
}

/// Settings of one engine: all present, all absent, or an error naming the missing ones.
pub(crate) fn all_or_none<const N: usize>(
    engine: EngineKind,
    settings: [(&str, &Option<String>); N],
) -> Result<Option<[String; N]>, EngineError> {
    let present = settings
        .iter()
        .filter(|(_, v)| v.as_deref().is_some_and(|v| !v.is_empty()))
        .count();
    if present == 0 {
        return Ok(None);
    }
    if present < N {
        let missing: Vec<&str> = settings
            .iter()
            .filter(|(_, v)| v.as_deref().is_none_or(str::is_empty))
            .map(|(name, _)| *name)
            .collect();
        return Err(EngineError::NotConfigured {
            engine,
            missing: missing.join(", "),
        });
    }
    Ok(Some(settings.map(|(_, v)| v.clone().unwrap_or_default())))
}

#[cfg(test)]
pub(crate) mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        engines: EngineConfig,
    }

    /// Defaults with no engine settings from the environment.
    pub(crate) fn config() -> EngineConfig {
        let mut config = Args::try_parse_from(["test"]).expect("defaults").engines;
        config.agora_app_id = None;
        config.agora_app_certificate = None;
        config.twilio_account_sid = None;
        config.twilio_api_key_sid = None;
        config.twilio_api_key_secret = None;
        config
    }

    #[test]
    fn the_default_engine_must_be_configured() {
        let mut config = config();
        config.engine = EngineKind::Agora;
        let error = Engines::from_config(&config).unwrap_err().to_string();
        assert!(error.contains("AGORA_APP_ID"), "{error}");
        config.engine = EngineKind::Livekit;
        config.livekit_api_secret = None;
        let error = Engines::from_config(&config).unwrap_err().to_string();
        assert!(error.contains("LIVEKIT_API_SECRET"), "{error}");
    }

    #[test]
    fn every_configured_engine_is_available() {
        let mut config = config();
        config.agora_app_id = Some("970CA35de60c44645bbae8a215061b33".into());
        config.agora_app_certificate = Some("5CFd2fd1755d40ecb72977518be15d3b".into());
        config.twilio_account_sid = Some("AC1".into());
        config.twilio_api_key_sid = Some("SK1".into());
        config.twilio_api_key_secret = Some("s".into());
        let engines = Engines::from_config(&config).unwrap();
        for kind in [EngineKind::Livekit, EngineKind::Agora, EngineKind::Twilio] {
            assert_eq!(engines.get(kind).unwrap().kind(), kind);
        }
        assert_eq!(
            "zoom".parse::<EngineKind>().unwrap_err().to_string(),
            "unknown videochat engine \"zoom\" (expected livekit, agora or twilio)"
        );
    }
}
