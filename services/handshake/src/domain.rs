//! The handshake's vocabulary: identifiers that can only hold valid values, the records the
//! state machine reasons about, and the events it emits. Nothing here knows about JSON frames,
//! protobuf or SQL; the edges convert.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::engine::EngineKind;

/// The longest identifier we accept, in bytes. Generous for OIDC `sub` values and UUIDs alike.
pub const MAX_ID_LEN: usize = 128;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} bytes (got {0})")]
    TooLong(usize),
    #[error("must not contain control characters")]
    BadCharacter,
}

fn validate_id(s: &str) -> Result<(), InvalidId> {
    if s.is_empty() {
        return Err(InvalidId::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(InvalidId::TooLong(s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidId::BadCharacter);
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Accepts 1..=128 bytes without control characters.
            pub fn parse(s: impl Into<String>) -> Result<Self, InvalidId> {
                let s = s.into();
                validate_id(&s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Maps keyed by the id can be searched with a plain `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

identifier!(
    /// A user id: the `sub` of the user's token.
    UserId
);
identifier!(
    /// A videochat request (a ring): `videochatRequestId`.
    RequestId
);
identifier!(
    /// A videochat: `videochatId`.
    VideochatId
);
identifier!(
    /// One WebSocket connection on one gateway.
    ConnectionId
);
identifier!(
    /// A gateway process.
    GatewayId
);
identifier!(
    /// The client's idempotency key: the frame's `event.id`.
    IdempotencyKey
);

impl RequestId {
    pub fn generate() -> Self {
        Self(format!("vcr_{}", uuid::Uuid::now_v7().simple()))
    }
}

impl VideochatId {
    pub fn generate() -> Self {
        Self(format!("vc_{}", uuid::Uuid::now_v7().simple()))
    }
}

/// A direct call rings one user for a new videochat; an invite rings one user into an existing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    Direct,
    Invite,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Direct => "direct",
            RequestKind::Invite => "invite",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(RequestKind::Direct),
            "invite" => Some(RequestKind::Invite),
            _ => None,
        }
    }
}

/// Where a ring is in its life. Only `Pending` can change, and only once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Pending,
    Accepted,
    Declined,
    Cancelled,
    Expired,
    Merged,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Accepted => "accepted",
            RequestStatus::Declined => "declined",
            RequestStatus::Cancelled => "cancelled",
            RequestStatus::Expired => "expired",
            RequestStatus::Merged => "merged",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RequestStatus::Pending,
            "accepted" => RequestStatus::Accepted,
            "declined" => RequestStatus::Declined,
            "cancelled" => RequestStatus::Cancelled,
            "expired" => RequestStatus::Expired,
            "merged" => RequestStatus::Merged,
            _ => return None,
        })
    }
}

/// A ring: who asks whom, for which videochat, until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideochatRequest {
    pub id: RequestId,
    pub kind: RequestKind,
    pub initiator: UserId,
    pub target: UserId,
    /// The videochat an invite is for; `None` for a direct request until it is accepted.
    pub videochat_id: Option<VideochatId>,
    /// Engine a direct request's videochat will use.
    pub engine: EngineKind,
    pub status: RequestStatus,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

impl VideochatRequest {
    /// Pending and not yet past its ring timeout.
    pub fn is_ringing(&self, now_ms: i64) -> bool {
        self.status == RequestStatus::Pending && now_ms < self.expires_at_ms
    }

    /// The key that makes "one pending direct request per pair of users" a unique index.
    pub fn pair_key(a: &UserId, b: &UserId) -> String {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        format!("{low}\u{1f}{high}")
    }
}

/// The kinds of videochat of the API text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VideochatMode {
    #[serde(rename = "videochat")]
    Videochat,
    #[serde(rename = "conference")]
    Conference,
    #[serde(rename = "networkConference")]
    NetworkConference,
}

impl VideochatMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VideochatMode::Videochat => "videochat",
            VideochatMode::Conference => "conference",
            VideochatMode::NetworkConference => "networkConference",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "videochat" => Some(VideochatMode::Videochat),
            "conference" => Some(VideochatMode::Conference),
            "networkConference" => Some(VideochatMode::NetworkConference),
            _ => None,
        }
    }
}

/// A videochat: one engine room shared by its participants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Videochat {
    pub id: VideochatId,
    pub mode: VideochatMode,
    pub engine: EngineKind,
    pub room: String,
    /// LiveKit E2EE passphrase, the same for every participant.
    pub shared_secret: String,
    pub created_at_ms: i64,
    /// When the media engine reported the room finished: the videochat is over and cannot be
    /// invited or merged into.
    pub ended_at_ms: Option<i64>,
}

/// A participant's rights. `is_moderator` is derived (`is_owner || is_panelist`), never stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    pub is_owner: bool,
    pub is_panelist: bool,
    pub is_presenter: bool,
    pub is_co_presenter: bool,
    pub is_promoted: bool,
    pub is_participant: bool,
    pub is_listener: bool,
}

impl Permissions {
    /// The direct initiator: owner and moderator of the videochat.
    pub fn owner() -> Self {
        Self {
            is_owner: true,
            is_promoted: true,
            is_participant: true,
            ..Self::default()
        }
    }

    /// The direct target, merged users, and invitees into a plain videochat.
    pub fn promoted_participant() -> Self {
        Self {
            is_promoted: true,
            is_participant: true,
            ..Self::default()
        }
    }

    /// Invitees into a conference: may participate, may ask for a promotion.
    pub fn participant() -> Self {
        Self {
            is_participant: true,
            ..Self::default()
        }
    }

    /// Deprecated in the API text but still sent: owner or panelist.
    pub fn is_moderator(&self) -> bool {
        self.is_owner || self.is_panelist
    }

    /// Whether the participant may send audio/video into the room: speaking needs promotion
    /// (or a stronger role); plain participants and listeners only receive.
    pub fn can_publish(&self) -> bool {
        !self.is_listener
            && (self.is_owner
                || self.is_panelist
                || self.is_presenter
                || self.is_co_presenter
                || self.is_promoted)
    }

    /// Compact storage form.
    pub fn to_bits(self) -> i64 {
        [
            self.is_owner,
            self.is_panelist,
            self.is_presenter,
            self.is_co_presenter,
            self.is_promoted,
            self.is_participant,
            self.is_listener,
        ]
        .iter()
        .enumerate()
        .fold(0, |bits, (i, on)| if *on { bits | (1 << i) } else { bits })
    }

    pub fn from_bits(bits: i64) -> Self {
        let bit = |i: u32| bits & (1 << i) != 0;
        Self {
            is_owner: bit(0),
            is_panelist: bit(1),
            is_presenter: bit(2),
            is_co_presenter: bit(3),
            is_promoted: bit(4),
            is_participant: bit(5),
            is_listener: bit(6),
        }
    }
}

/// A user in a videochat, with the numeric `uid` Agora needs (unique within the videochat).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    pub videochat_id: VideochatId,
    pub user_id: UserId,
    pub uid: u32,
    pub permissions: Permissions,
}

/// Ready Player Me avatar of the User Simple model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Avatar3D {
    pub asset_id: String,
    pub asset_skins: std::collections::BTreeMap<String, String>,
    pub avatar_url: String,
    pub avatar_user_id: String,
}

impl Avatar3D {
    pub fn is_empty(&self) -> bool {
        self.asset_id.is_empty()
            && self.asset_skins.is_empty()
            && self.avatar_url.is_empty()
            && self.avatar_user_id.is_empty()
    }
}

/// The API text's "User Simple".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub id: UserId,
    pub first_name: String,
    pub last_name: String,
    pub privacy_mode: i32,
    pub avatar: String,
    pub avatar_3d: Option<Avatar3D>,
    pub company_name: String,
    pub company_title: String,
}

impl UserProfile {
    /// A profile that only knows the id (a user nobody described yet).
    pub fn bare(id: UserId) -> Self {
        Self {
            id,
            first_name: String::new(),
            last_name: String::new(),
            privacy_mode: 0,
            avatar: String::new(),
            avatar_3d: None,
            company_name: String::new(),
            company_title: String::new(),
        }
    }

    pub fn display_name(&self) -> String {
        match (self.first_name.is_empty(), self.last_name.is_empty()) {
            (false, false) => format!("{} {}", self.first_name, self.last_name),
            (false, true) => self.first_name.clone(),
            (true, false) => self.last_name.clone(),
            (true, true) => self.id.to_string(),
        }
    }
}

/// Fields of a profile to change; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub privacy_mode: Option<i32>,
    pub avatar: Option<String>,
    pub company_name: Option<String>,
    pub company_title: Option<String>,
}

/// Everything one participant needs to join the media room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCredentials {
    /// The ring whose answer produced these credentials (none for a videochat created directly).
    pub videochat_request_id: Option<RequestId>,
    pub videochat_id: VideochatId,
    pub mode: VideochatMode,
    pub engine: String,
    pub app_id: String,
    pub url: String,
    pub room: String,
    pub identity: UserId,
    pub uid: u32,
    pub token: String,
    pub shared_secret: String,
    /// The participant's own profile.
    pub user: UserProfile,
    pub permissions: Permissions,
}

/// Why a ring stopped without being accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclineReason {
    Declined,
    Cancelled,
    Timeout,
}

impl DeclineReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineReason::Declined => "declined",
            DeclineReason::Cancelled => "cancelled",
            DeclineReason::Timeout => "timeout",
        }
    }
}

/// What a ringing user is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    pub request_id: RequestId,
    /// Who rings.
    pub user: UserProfile,
    /// Up to 10 current participants of the videochat (empty for a direct request).
    pub participants: Vec<UserProfile>,
    /// All participants of the videochat.
    pub counter: u32,
    pub expires_at_ms: i64,
    pub videochat_id: Option<VideochatId>,
}

/// An event for one user, delivered to every socket of that user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    VideochatRequested(Box<Ring>),
    DirectVideochatRequestAccepted(Box<JoinCredentials>),
    VideochatAccepted {
        request_id: RequestId,
    },
    VideochatDeclined {
        request_id: RequestId,
        reason: DeclineReason,
    },
}

impl Event {
    /// Name used in logs and metrics (the WebSocket event name without its prefix).
    pub fn name(&self) -> &'static str {
        match self {
            Event::VideochatRequested(_) => "videochatRequested",
            Event::DirectVideochatRequestAccepted(_) => "directVideochatRequestAccepted",
            Event::VideochatAccepted { .. } => "videochatAccepted",
            Event::VideochatDeclined { .. } => "videochatDeclined",
        }
    }
}

/// An event addressed to a user, as the state machine emits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub recipient: UserId,
    pub event: Event,
}

/// Where a registered device receives pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushPlatform {
    Apns,
    Fcm,
    Webpush,
}

impl PushPlatform {
    pub fn as_str(self) -> &'static str {
        match self {
            PushPlatform::Apns => "apns",
            PushPlatform::Fcm => "fcm",
            PushPlatform::Webpush => "webpush",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "apns" => Some(PushPlatform::Apns),
            "fcm" => Some(PushPlatform::Fcm),
            "webpush" => Some(PushPlatform::Webpush),
            _ => None,
        }
    }
}

/// The longest push token accepted, in bytes (an APNs token is 64 hex characters, an FCM
/// registration token about 160; a Web Push subscription, endpoint URL and keys, fits too).
pub const MAX_PUSH_TOKEN_LEN: usize = 4096;

/// A device's push token: 1..=[`MAX_PUSH_TOKEN_LEN`] bytes without control characters. Opaque
/// to the service; the deployment's push sender knows what to do with it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PushToken(String);

/// Why a string is not a push token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPushToken {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_PUSH_TOKEN_LEN} bytes (got {0})")]
    TooLong(usize),
    #[error("must not contain control characters")]
    BadCharacter,
}

impl PushToken {
    pub fn parse(s: impl Into<String>) -> Result<Self, InvalidPushToken> {
        let s = s.into();
        if s.is_empty() {
            return Err(InvalidPushToken::Empty);
        }
        if s.len() > MAX_PUSH_TOKEN_LEN {
            return Err(InvalidPushToken::TooLong(s.len()));
        }
        if s.chars().any(char::is_control) {
            return Err(InvalidPushToken::BadCharacter);
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PushToken {
    type Error = InvalidPushToken;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<PushToken> for String {
    fn from(token: PushToken) -> Self {
        token.0
    }
}

/// A device a user registered for push: rung through the push sender when the user has no live
/// socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushDevice {
    pub platform: PushPlatform,
    pub token: PushToken,
    /// A VoIP push (APNs PushKit, a high-priority FCM data message) that starts the call UI.
    pub voip: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_reject_empty_long_and_control_characters() {
        assert_eq!(UserId::parse(""), Err(InvalidId::Empty));
        assert_eq!(UserId::parse("x".repeat(129)), Err(InvalidId::TooLong(129)));
        assert_eq!(UserId::parse("a\nb"), Err(InvalidId::BadCharacter));
        assert!(UserId::parse("Ann Lee").is_ok());
        assert_eq!(UserId::parse("a\u{0}"), Err(InvalidId::BadCharacter));
        assert!(UserId::parse("auth0|5f9b-ü").is_ok());
        assert!(UserId::parse("x".repeat(128)).is_ok());
    }

    #[test]
    fn permissions_round_trip_through_bits() {
        for p in [
            Permissions::owner(),
            Permissions::promoted_participant(),
            Permissions::participant(),
            Permissions::default(),
        ] {
            assert_eq!(Permissions::from_bits(p.to_bits()), p);
        }
        assert!(Permissions::owner().is_moderator());
        assert!(!Permissions::promoted_participant().is_moderator());
        assert!(Permissions::promoted_participant().can_publish());
        assert!(!Permissions::participant().can_publish());
    }

    #[test]
    fn push_tokens_reject_empty_oversized_and_control_characters() {
        assert_eq!(PushToken::parse(""), Err(InvalidPushToken::Empty));
        assert_eq!(
            PushToken::parse("x".repeat(MAX_PUSH_TOKEN_LEN + 1)),
            Err(InvalidPushToken::TooLong(MAX_PUSH_TOKEN_LEN + 1))
        );
        assert_eq!(
            PushToken::parse("a\nb"),
            Err(InvalidPushToken::BadCharacter)
        );
        assert!(PushToken::parse("x".repeat(MAX_PUSH_TOKEN_LEN)).is_ok());
        assert_eq!(PushPlatform::parse("apns"), Some(PushPlatform::Apns));
        assert_eq!(PushPlatform::parse("sms"), None);
    }

    #[test]
    fn pair_key_ignores_direction() {
        let a = UserId::parse("a").unwrap();
        let b = UserId::parse("b").unwrap();
        assert_eq!(
            VideochatRequest::pair_key(&a, &b),
            VideochatRequest::pair_key(&b, &a)
        );
    }
}
