//! Engine.IO v4 / Socket.IO v5 framing over the WebSocket transport, written by hand: a client of
//! the default namespace needs a handful of packet kinds (about fifty lines), which is less than
//! the client crates bring with them (their own HTTP and TLS stacks, next to tokio-tungstenite).
//!
//! Each Engine.IO packet is one text frame: a digit for its kind, then its payload — `0` open
//! (JSON handshake), `2` ping, `3` pong, `4` message. A message carries one Socket.IO packet, a
//! digit again — `0` connect, `1` disconnect, `2` event, `3` ack, `4` connect error — then, for
//! events and acks, an optional numeric ack id and a JSON array: `42["name",data]`,
//! `4217["name",data]` (answer me with ack 17), `4317[answer]`.

use serde_json::{Value, json};

/// The client's answer to a server ping.
pub const PONG: &str = "3";

/// An inbound packet, as far as the load generator cares.
#[derive(Debug, PartialEq)]
pub enum Packet {
    Open,
    Ping,
    Connected,
    ConnectError(Value),
    Disconnected,
    Event { name: String, data: Value },
    Ack { id: u64, args: Vec<Value> },
    Other,
}

/// `40{auth}`: join the default namespace, with the auth payload the server's middleware reads.
pub fn connect(auth: &Value) -> String {
    format!("40{auth}")
}

/// `42<id>["name",data]`: an event the server answers with ack `id`.
pub fn event_with_ack(id: u64, name: &str, data: &Value) -> String {
    format!("42{id}{}", json!([name, data]))
}

pub fn decode(text: &str) -> Packet {
    match text.as_bytes().first() {
        Some(b'0') => Packet::Open,
        Some(b'2') => Packet::Ping,
        Some(b'4') => decode_message(&text[1..]),
        _ => Packet::Other,
    }
}

fn decode_message(text: &str) -> Packet {
    let Some(kind) = text.as_bytes().first().copied() else {
        return Packet::Other;
    };
    if !kind.is_ascii_digit() {
        return Packet::Other;
    }
    let rest = &text[1..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (id, payload) = rest.split_at(digits);
    let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    match (kind, payload) {
        (b'0', _) => Packet::Connected,
        (b'1', _) => Packet::Disconnected,
        (b'4', payload) => Packet::ConnectError(payload),
        (b'2', Value::Array(mut items)) if !items.is_empty() => {
            let data = if items.len() > 1 {
                items.swap_remove(1)
            } else {
                Value::Null
            };
            match items.swap_remove(0) {
                Value::String(name) => Packet::Event { name, data },
                _ => Packet::Other,
            }
        }
        (b'3', Value::Array(args)) => match id.parse() {
            Ok(id) => Packet::Ack { id, args },
            Err(_) => Packet::Other,
        },
        _ => Packet::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_packets_a_client_sees() {
        assert_eq!(decode(r#"0{"sid":"x","pingInterval":25000}"#), Packet::Open);
        assert_eq!(decode("2"), Packet::Ping);
        assert_eq!(decode(r#"40{"sid":"y"}"#), Packet::Connected);
        assert_eq!(
            decode(r#"44{"message":"unauthorized"}"#),
            Packet::ConnectError(json!({"message": "unauthorized"}))
        );
        assert_eq!(
            decode(r#"42["videochat:videochatAccepted",{"videochatRequestId":"r"}]"#),
            Packet::Event {
                name: "videochat:videochatAccepted".into(),
                data: json!({"videochatRequestId": "r"})
            }
        );
        assert_eq!(
            decode(r#"4317[{"data":{},"error":{"status":false}}]"#),
            Packet::Ack {
                id: 17,
                args: vec![json!({"data": {}, "error": {"status": false}})]
            }
        );
        assert_eq!(decode("41"), Packet::Disconnected);
        assert_eq!(decode("é"), Packet::Other);
        assert_eq!(decode(""), Packet::Other);
    }

    #[test]
    fn encodes_connect_and_acked_events() {
        assert_eq!(connect(&json!({"token": "t"})), r#"40{"token":"t"}"#);
        assert_eq!(
            event_with_ack(3, "a", &json!({"b": 1})),
            r#"423["a",{"b":1}]"#
        );
    }
}
