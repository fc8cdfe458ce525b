//! The two wire protocols the scenarios speak, behind one shape: a client sends requests (each
//! with an id) and receives responses (matched by that id) and named events.
//!
//! - `videochat`: our WebSocket frames (`docs/protocol.md`), `{"type","data","event":{"id"}}`;
//!   a response echoes the request's `type` and `event.id` and carries `error`. The token rides
//!   in `?access_token=`.
//! - `socketio`: the Socket.IO peer (`bench/socketio-peer`). Requests are events with an ack id,
//!   answered by an ack whose one argument has the same `{data, error}` shape as our responses;
//!   events are `42["name",data]`. The token rides in the connect packet's auth payload.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Ws;
use crate::engineio::{self, Packet};

pub const REQUEST_DIRECT: &str = "videochat:requestDirectVideochat";
pub const ACCEPT: &str = "videochat:acceptVideochatRequest";
pub const REQUESTED: &str = "videochat:videochatRequested";
pub const CREDENTIALS: &str = "videochat:directVideochatRequestAccepted";
pub const ACCEPTED: &str = "videochat:videochatAccepted";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Our WebSocket frames, on the gateway's `/ws`.
    Videochat,
    /// Socket.IO (Engine.IO v4, websocket transport), on the peer's `/socket.io/`.
    Socketio,
}

/// What a client receives, decoded.
#[derive(Debug)]
pub enum Inbound {
    /// The answer to the request with this id: its `data`, or the error it carried.
    Response {
        id: String,
        outcome: Result<Value, String>,
    },
    Event {
        name: String,
        data: Value,
    },
    /// An Engine.IO ping, to be answered at once.
    Ping,
    /// A WebSocket pong (the answer to our liveness ping).
    Pong,
}

impl Protocol {
    pub fn default_url(self) -> &'static str {
        match self {
            Protocol::Videochat => "ws://127.0.0.1:8080/ws",
            Protocol::Socketio => "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// The URL to open for a user holding `token`.
    pub fn url(self, base: &str, token: &str) -> String {
        match self {
            Protocol::Videochat => {
                let separator = if base.contains('?') { '&' } else { '?' };
                format!("{base}{separator}access_token={token}")
            }
            Protocol::Socketio => base.to_owned(),
        }
    }

    /// What comes after the WebSocket upgrade before the socket is authenticated and usable:
    /// nothing for ours (the upgrade authenticated it), the namespace connect for Socket.IO.
    pub async fn open(self, ws: &mut Ws, token: &str, timeout: Duration) -> anyhow::Result<()> {
        if self == Protocol::Videochat {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut connect_sent = false;
        loop {
            let message = tokio::time::timeout_at(deadline, ws.next())
                .await
                .context("timed out in the Socket.IO handshake")?
                .context("closed in the Socket.IO handshake")??;
            let Message::Text(text) = message else {
                continue;
            };
            match engineio::decode(text.as_str()) {
                Packet::Open if !connect_sent => {
                    let packet = engineio::connect(&json!({ "token": token }));
                    ws.send(Message::Text(packet.into())).await?;
                    connect_sent = true;
                }
                Packet::Ping => ws.send(Message::Text(engineio::PONG.into())).await?,
                Packet::Connected => return Ok(()),
                Packet::ConnectError(reason) => bail!("Socket.IO connect refused: {reason}"),
                _ => {}
            }
        }
    }

    /// A request frame and the id its response will carry. `sequence` is unique per socket,
    /// `run` per load-generator run: our `event.id` is an idempotency key, so ids must not repeat
    /// across runs against the same database.
    pub fn encode_request(
        self,
        sequence: u64,
        run: &str,
        kind: &str,
        data: &Value,
    ) -> (String, String) {
        match self {
            Protocol::Videochat => {
                let id = format!("lg-{run}-{sequence}");
                let frame = json!({ "type": kind, "data": data, "event": { "id": id } });
                (id, frame.to_string())
            }
            Protocol::Socketio => (
                sequence.to_string(),
                engineio::event_with_ack(sequence, kind, data),
            ),
        }
    }

    /// `None` for what no scenario waits for.
    pub fn decode(self, text: &str) -> Option<Inbound> {
        match self {
            Protocol::Videochat => {
                let mut frame: Value = serde_json::from_str(text).ok()?;
                let kind = frame["type"].as_str()?.to_owned();
                if kind == REQUEST_DIRECT || kind == ACCEPT {
                    let id = frame["event"]["id"].as_str()?.to_owned();
                    Some(Inbound::Response {
                        id,
                        outcome: outcome(&mut frame),
                    })
                } else {
                    Some(Inbound::Event {
                        name: kind,
                        data: frame["data"].take(),
                    })
                }
            }
            Protocol::Socketio => match engineio::decode(text) {
                Packet::Ping => Some(Inbound::Ping),
                Packet::Event { name, data } => Some(Inbound::Event { name, data }),
                Packet::Ack { id, mut args } => {
                    let mut answer = if args.is_empty() {
                        Value::Null
                    } else {
                        args.swap_remove(0)
                    };
                    Some(Inbound::Response {
                        id: id.to_string(),
                        outcome: outcome(&mut answer),
                    })
                }
                _ => None,
            },
        }
    }
}

/// `{data, error}` → the data, or the error as text (code first, so errors group by code).
fn outcome(answer: &mut Value) -> Result<Value, String> {
    let error = &answer["error"];
    if error["status"] == true {
        Err(format!("error {} {}", error["code"], error["message"]))
    } else {
        Ok(answer["data"].take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_protocols_decode_responses_and_events_alike() {
        let ours = Protocol::Videochat;
        let (id, frame) = ours.encode_request(7, "r", REQUEST_DIRECT, &json!({"targetUser": "b"}));
        assert_eq!(id, "lg-r-7");
        assert!(frame.contains(r#""id":"lg-r-7""#));
        let answer = r#"{"type":"videochat:requestDirectVideochat","data":{"videochatRequestId":"x"},"error":{"status":false,"code":0,"message":""},"event":{"id":"lg-r-7","date":1}}"#;
        match ours.decode(answer) {
            Some(Inbound::Response {
                id,
                outcome: Ok(data),
            }) => {
                assert_eq!(id, "lg-r-7");
                assert_eq!(data["videochatRequestId"], "x");
            }
            other => panic!("{other:?}"),
        }
        let refused = r#"{"type":"videochat:acceptVideochatRequest","error":{"status":true,"code":10014,"message":"no"},"event":{"id":"lg-r-8","date":1}}"#;
        assert!(matches!(
            ours.decode(refused),
            Some(Inbound::Response { outcome: Err(e), .. }) if e.starts_with("error 10014")
        ));

        let peer = Protocol::Socketio;
        let (id, frame) = peer.encode_request(7, "r", ACCEPT, &json!({"videochatRequestId": "x"}));
        assert_eq!(id, "7");
        assert_eq!(
            frame,
            r#"427["videochat:acceptVideochatRequest",{"videochatRequestId":"x"}]"#
        );
        match peer.decode(r#"437[{"data":{"room":"vc"},"error":{"status":false,"code":0}}]"#) {
            Some(Inbound::Response {
                id,
                outcome: Ok(data),
            }) => {
                assert_eq!(id, "7");
                assert_eq!(data["room"], "vc");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            peer.decode(r#"42["videochat:videochatRequested",{"videochatRequestId":"x"}]"#),
            Some(Inbound::Event { name, .. }) if name == REQUESTED
        ));
        assert!(matches!(peer.decode("2"), Some(Inbound::Ping)));
    }

    #[test]
    fn tokens_ride_in_the_query_for_ours_only() {
        assert_eq!(
            Protocol::Videochat.url("ws://h/ws", "t"),
            "ws://h/ws?access_token=t"
        );
        assert_eq!(
            Protocol::Socketio.url("ws://h/socket.io/?EIO=4&transport=websocket", "t"),
            "ws://h/socket.io/?EIO=4&transport=websocket"
        );
    }
}
