//! The WebSocket wire protocol (CONTRACT §2): every frame is one JSON object
//! `{"type", "data", "error", "event": {"id", "date"}}`.
//!
//! Inbound frames are decoded here into a typed [`ClientRequest`] or a [`FrameError`] carrying
//! the contract code, the field at fault, and whatever `type` and `event.id` could be read (so
//! the error response can echo them). Outbound frames are encoded here too. Nothing else in the
//! gateway touches raw JSON.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::WireCode;

/// Prefix of every videochat frame type.
pub const PREFIX: &str = "videochat:";
/// Longest id accepted in `data` or `event.id`, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A client frame that passed envelope and data validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub kind: &'static str,
    pub event_id: String,
    /// W3C traceparent a client may send in `event` to join its own trace.
    pub traceparent: Option<String>,
    pub request: ClientRequest,
}

/// The five requests of the API text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    RequestDirectVideochat {
        target_user: String,
    },
    Invite {
        target_user: String,
        videochat_id: String,
    },
    AcceptVideochatRequest {
        videochat_request_id: String,
    },
    DeclineVideochatRequest {
        videochat_request_id: String,
    },
    MergeToVideochat {
        videochat_id: String,
        videochat_request_id: String,
    },
    /// A page of the user's call history.
    ListCalls {
        /// Only calls requested before this instant (Unix ms).
        before: Option<i64>,
        /// At most this many (1 to 100).
        limit: Option<u32>,
    },
    /// Push hand-off (CONTRACT §6): this socket's user registers a device for push.
    RegisterPushDevice(PushDevice),
    /// Forgets one of the user's devices.
    UnregisterPushDevice {
        token: String,
    },
}

/// `data` of `videochat:registerPushDevice`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushDevice {
    /// `apns`, `fcm` or `webpush`.
    pub platform: &'static str,
    pub token: String,
    pub voip: bool,
}

/// The push platforms a device may name.
pub const PUSH_PLATFORMS: [&str; 3] = ["apns", "fcm", "webpush"];
/// Longest push token accepted, in bytes.
pub const MAX_PUSH_TOKEN_LEN: usize = 4096;

pub const REQUEST_DIRECT: &str = "videochat:requestDirectVideochat";
pub const INVITE: &str = "videochat:invite";
pub const ACCEPT: &str = "videochat:acceptVideochatRequest";
pub const DECLINE: &str = "videochat:declineVideochatRequest";
pub const MERGE: &str = "videochat:mergeToVideochat";
pub const REGISTER_PUSH_DEVICE: &str = "videochat:registerPushDevice";
pub const UNREGISTER_PUSH_DEVICE: &str = "videochat:unregisterPushDevice";

pub const EVENT_REQUESTED: &str = "videochat:videochatRequested";
pub const EVENT_DIRECT_ACCEPTED: &str = "videochat:directVideochatRequestAccepted";
pub const EVENT_ACCEPTED: &str = "videochat:videochatAccepted";
pub const EVENT_DECLINED: &str = "videochat:videochatDeclined";
/// Sent to a socket instead of the events it asked to resume from, when those are gone.
pub const EVENT_RESYNC: &str = "videochat:resync";
/// Sent to a socket that connects while its user has missed calls they have not listed.
pub const EVENT_MISSED_CALLS: &str = "videochat:missedCalls";
pub const LIST_CALLS: &str = "videochat:listCalls";

/// A frame that cannot be served, with what could be read of it for the error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: WireCode,
    pub message: String,
    pub kind: Option<String>,
    pub event_id: Option<String>,
}

impl FrameError {
    fn new(code: WireCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            kind: None,
            event_id: None,
        }
    }
}

/// Decodes one text frame.
pub fn decode(text: &str, max_frame_bytes: usize) -> Result<Inbound, FrameError> {
    let value = serde_json::from_str::<Value>(text).map_err(|e| {
        FrameError::new(
            WireCode::InvalidFrame,
            format!("frame is not valid JSON: {e}"),
        )
    });
    let oversized = text.len() > max_frame_bytes;
    let value = match value {
        Ok(value) => value,
        Err(mut error) if oversized => {
            error.code = WireCode::InvalidData;
            error.message = too_large(text.len(), max_frame_bytes);
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    let Value::Object(mut frame) = value else {
        return Err(FrameError::new(
            WireCode::InvalidFrame,
            "frame must be a JSON object",
        ));
    };
    let kind = match frame.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => {
            let mut error = FrameError::new(WireCode::InvalidFrame, "frame has no string \"type\"");
            error.event_id = event_id_of(&frame);
            return Err(error);
        }
    };
    let echoed_id = event_id_of(&frame);
    let echo = |code, message: String| FrameError {
        code,
        message,
        kind: Some(truncate(&kind, 200)),
        event_id: echoed_id.clone(),
    };
    if oversized {
        return Err(echo(
            WireCode::InvalidData,
            too_large(text.len(), max_frame_bytes),
        ));
    }
    let event = match frame.remove("event") {
        None => return Err(echo(WireCode::InvalidData, "event.id is required".into())),
        Some(Value::Object(event)) => event,
        Some(_) => {
            return Err(echo(
                WireCode::InvalidData,
                "event must be an object".into(),
            ));
        }
    };
    let event_id = match event.get("id") {
        Some(Value::String(id)) => {
            check_id("event.id", id).map_err(|m| echo(WireCode::InvalidData, m))?
        }
        Some(_) => {
            return Err(echo(
                WireCode::InvalidData,
                "event.id must be a string".into(),
            ));
        }
        None => return Err(echo(WireCode::InvalidData, "event.id is required".into())),
    };
    match event.get("date") {
        None | Some(Value::Number(_)) | Some(Value::Null) => {}
        Some(_) => {
            return Err(echo(
                WireCode::InvalidData,
                "event.date must be a number (Unix milliseconds)".into(),
            ));
        }
    }
    let traceparent = match event.get("traceparent") {
        Some(Value::String(tp)) if is_traceparent(tp) => Some(tp.clone()),
        _ => None,
    };
    let data = match frame.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(echo(WireCode::InvalidData, "data must be an object".into())),
    };
    let id = |name: &str| field(&data, name).map_err(|m| echo(WireCode::InvalidData, m));
    let (kind, request) = match kind.as_str() {
        REQUEST_DIRECT => (
            REQUEST_DIRECT,
            ClientRequest::RequestDirectVideochat {
                target_user: id("targetUser")?,
            },
        ),
        INVITE => (
            INVITE,
            ClientRequest::Invite {
                target_user: id("targetUser")?,
                videochat_id: id("videochatId")?,
            },
        ),
        ACCEPT => (
            ACCEPT,
            ClientRequest::AcceptVideochatRequest {
                videochat_request_id: id("videochatRequestId")?,
            },
        ),
        DECLINE => (
            DECLINE,
            ClientRequest::DeclineVideochatRequest {
                videochat_request_id: id("videochatRequestId")?,
            },
        ),
        MERGE => (
            MERGE,
            ClientRequest::MergeToVideochat {
                videochat_id: id("videochatId")?,
                videochat_request_id: id("videochatRequestId")?,
            },
        ),
        LIST_CALLS => (
            LIST_CALLS,
            ClientRequest::ListCalls {
                before: optional_integer(&data, "before", 0, i64::MAX)
                    .map_err(|m| echo(WireCode::InvalidData, m))?,
                limit: optional_integer(&data, "limit", 1, 100)
                    .map_err(|m| echo(WireCode::InvalidData, m))?
                    .map(|n| n as u32),
            },
        ),
        REGISTER_PUSH_DEVICE => (
            REGISTER_PUSH_DEVICE,
            ClientRequest::RegisterPushDevice(
                push_device(&data).map_err(|m| echo(WireCode::InvalidData, m))?,
            ),
        ),
        UNREGISTER_PUSH_DEVICE => (
            UNREGISTER_PUSH_DEVICE,
            ClientRequest::UnregisterPushDevice {
                token: push_token(&data).map_err(|m| echo(WireCode::InvalidData, m))?,
            },
        ),
        other => {
            return Err(echo(
                WireCode::UnknownType,
                format!("unknown type {:?}", truncate(other, 200)),
            ));
        }
    };
    Ok(Inbound {
        kind,
        event_id,
        traceparent,
        request,
    })
}

fn too_large(len: usize, max: usize) -> String {
    format!("frame is {len} bytes; the limit is {max}")
}

fn event_id_of(frame: &Map<String, Value>) -> Option<String> {
    match frame.get("event")?.get("id")? {
        Value::String(id) => Some(truncate(id, MAX_ID_LEN)),
        _ => None,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// An optional whole-number field of `data` within `min..=max`.
fn optional_integer(
    data: &Map<String, Value>,
    name: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, String> {
    match data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "data.{name} must be a whole number from {min} to {max}"
            )),
        },
        Some(_) => Err(format!("data.{name} must be a number")),
    }
}

/// A required id field of `data`, named in the message as the client wrote it.
fn field(data: &Map<String, Value>, name: &str) -> Result<String, String> {
    match data.get(name) {
        Some(Value::String(value)) => check_id(&format!("data.{name}"), value),
        None | Some(Value::Null) => Err(format!("data.{name} is required")),
        Some(_) => Err(format!("data.{name} must be a string")),
    }
}

/// `data` of `videochat:registerPushDevice`: `platform`, `token`, `voip`, each checked.
fn push_device(data: &Map<String, Value>) -> Result<PushDevice, String> {
    let platform = match data.get("platform") {
        Some(Value::String(p)) => PUSH_PLATFORMS
            .iter()
            .find(|known| *known == p)
            .copied()
            .ok_or_else(|| format!("data.platform must be one of {}", PUSH_PLATFORMS.join(", ")))?,
        None | Some(Value::Null) => return Err("data.platform is required".into()),
        Some(_) => return Err("data.platform must be a string".into()),
    };
    let token = push_token(data)?;
    let voip = match data.get("voip") {
        Some(Value::Bool(voip)) => *voip,
        None | Some(Value::Null) => return Err("data.voip is required".into()),
        Some(_) => return Err("data.voip must be a boolean".into()),
    };
    Ok(PushDevice {
        platform,
        token,
        voip,
    })
}

/// `data.token`: 1..=[`MAX_PUSH_TOKEN_LEN`] bytes without control characters.
fn push_token(data: &Map<String, Value>) -> Result<String, String> {
    match data.get("token") {
        Some(Value::String(token)) if token.is_empty() => {
            Err("data.token must not be empty".into())
        }
        Some(Value::String(token)) if token.len() > MAX_PUSH_TOKEN_LEN => Err(format!(
            "data.token is too long (at most {MAX_PUSH_TOKEN_LEN} bytes)"
        )),
        Some(Value::String(token)) if token.chars().any(char::is_control) => {
            Err("data.token must not contain control characters".into())
        }
        Some(Value::String(token)) => Ok(token.clone()),
        None | Some(Value::Null) => Err("data.token is required".into()),
        Some(_) => Err("data.token must be a string".into()),
    }
}

fn check_id(name: &str, value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err(format!("{name} must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(format!("{name} is too long (at most {MAX_ID_LEN} bytes)"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{name} must not contain control characters"));
    }
    Ok(value.to_owned())
}

fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The `error` object of every frame the server sends.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WireError {
    pub status: bool,
    pub code: i32,
    pub message: String,
}

impl WireError {
    pub fn none() -> Self {
        Self {
            status: false,
            code: 0,
            message: String::new(),
        }
    }
}

/// A successful response: same `type`, echoed `event.id`, `data` when the operation has any.
pub fn success(kind: &str, event_id: &str, data: Option<Value>, now_ms: i64) -> String {
    let mut frame = json!({
        "type": kind,
        "error": WireError::none(),
        "event": { "id": event_id, "date": now_ms },
    });
    if let (Some(data), Value::Object(frame)) = (data, &mut frame) {
        frame.insert("data".into(), data);
    }
    frame.to_string()
}

/// A failed response: no `data`, `error.status: true`, and the `type`/`event.id` that the
/// request carried, where it carried them.
pub fn failure(
    kind: Option<&str>,
    event_id: Option<&str>,
    code: WireCode,
    message: &str,
    now_ms: i64,
) -> String {
    let mut frame = Map::new();
    if let Some(kind) = kind {
        frame.insert("type".into(), Value::String(kind.to_owned()));
    }
    frame.insert(
        "error".into(),
        json!({ "status": true, "code": code.as_i32(), "message": message }),
    );
    let mut event = Map::new();
    if let Some(id) = event_id {
        event.insert("id".into(), Value::String(id.to_owned()));
    }
    event.insert("date".into(), Value::from(now_ms));
    frame.insert("event".into(), Value::Object(event));
    Value::Object(frame).to_string()
}

/// A server event: its name as `type`, a fresh (but stable across redelivery) `event.id`.
pub fn event(kind: &str, event_id: &str, data: Value, now_ms: i64) -> String {
    json!({
        "type": kind,
        "data": data,
        "error": WireError::none(),
        "event": { "id": event_id, "date": now_ms },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> WireCode {
        decode(text, 1024).unwrap_err().code
    }

    #[test]
    fn a_well_formed_request_decodes() {
        let inbound = decode(
            r#"{"type":"videochat:requestDirectVideochat","data":{"targetUser":"bob"},"event":{"id":"c-1","date":1764000000000}}"#,
            1024,
        )
        .unwrap();
        assert_eq!(inbound.kind, REQUEST_DIRECT);
        assert_eq!(inbound.event_id, "c-1");
        assert_eq!(
            inbound.request,
            ClientRequest::RequestDirectVideochat {
                target_user: "bob".into()
            }
        );
    }

    #[test]
    fn bad_frames_get_the_contract_codes() {
        assert_eq!(code_of("not json"), WireCode::InvalidFrame);
        assert_eq!(code_of("[1,2]"), WireCode::InvalidFrame);
        assert_eq!(code_of(r#"{"type":5}"#), WireCode::InvalidFrame);
        assert_eq!(
            code_of(r#"{"type":"videochat:nope","event":{"id":"x"}}"#),
            WireCode::UnknownType
        );
        assert_eq!(
            code_of(r#"{"type":"videochat:invite","data":{"targetUser":"b"},"event":{"id":"x"}}"#),
            WireCode::InvalidData
        );
        assert_eq!(
            code_of(r#"{"type":"videochat:invite","event":{"id":7}}"#),
            WireCode::InvalidData
        );
    }

    #[test]
    fn errors_echo_type_and_event_id_and_name_the_field() {
        let error = decode(
            r#"{"type":"videochat:acceptVideochatRequest","data":{"videochatRequestId":42},"event":{"id":"e-9"}}"#,
            1024,
        )
        .unwrap_err();
        assert_eq!(error.kind.as_deref(), Some(ACCEPT));
        assert_eq!(error.event_id.as_deref(), Some("e-9"));
        assert!(
            error.message.contains("data.videochatRequestId"),
            "{}",
            error.message
        );
    }

    #[test]
    fn oversized_frames_are_refused_with_1002() {
        let big = format!(
            r#"{{"type":"videochat:requestDirectVideochat","data":{{"targetUser":"{}"}},"event":{{"id":"big"}}}}"#,
            "x".repeat(2000)
        );
        let error = decode(&big, 1024).unwrap_err();
        assert_eq!(error.code, WireCode::InvalidData);
        assert_eq!(error.event_id.as_deref(), Some("big"));
    }

    #[test]
    fn push_device_frames_decode_and_bad_ones_name_the_field() {
        let inbound = decode(
            r#"{"type":"videochat:registerPushDevice","data":{"platform":"apns","token":"ab12","voip":true},"event":{"id":"p-1"}}"#,
            8192,
        )
        .unwrap();
        assert_eq!(
            inbound.request,
            ClientRequest::RegisterPushDevice(PushDevice {
                platform: "apns",
                token: "ab12".into(),
                voip: true
            })
        );
        let inbound = decode(
            r#"{"type":"videochat:unregisterPushDevice","data":{"token":"ab12"},"event":{"id":"p-2"}}"#,
            8192,
        )
        .unwrap();
        assert_eq!(
            inbound.request,
            ClientRequest::UnregisterPushDevice {
                token: "ab12".into()
            }
        );
        let long = "x".repeat(MAX_PUSH_TOKEN_LEN + 1);
        for (data, field) in [
            (
                r#"{"platform":"sms","token":"t","voip":false}"#.to_owned(),
                "data.platform",
            ),
            (r#"{"token":"t","voip":false}"#.to_owned(), "data.platform"),
            (
                r#"{"platform":"fcm","token":"","voip":false}"#.to_owned(),
                "data.token",
            ),
            (
                format!(r#"{{"platform":"fcm","token":"{long}","voip":false}}"#),
                "data.token",
            ),
            (
                r#"{"platform":"fcm","token":7,"voip":false}"#.to_owned(),
                "data.token",
            ),
            (
                r#"{"platform":"fcm","token":"t","voip":"yes"}"#.to_owned(),
                "data.voip",
            ),
            (r#"{"platform":"fcm","token":"t"}"#.to_owned(), "data.voip"),
        ] {
            let frame = format!(
                r#"{{"type":"videochat:registerPushDevice","data":{data},"event":{{"id":"p"}}}}"#
            );
            let error = decode(&frame, 16384).unwrap_err();
            assert_eq!(error.code, WireCode::InvalidData, "{data}");
            assert!(error.message.contains(field), "{data}: {}", error.message);
        }
    }

    #[test]
    fn failure_frames_omit_data() {
        let text = failure(Some(ACCEPT), Some("e"), WireCode::UnknownType, "m", 5);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert!(value.get("data").is_none());
        assert_eq!(value["error"]["status"], true);
        assert_eq!(value["error"]["code"], 1001);
        assert_eq!(value["event"]["id"], "e");
    }
}
