//! One WebSocket connection after the upgrade: one `select!` over the next client frame, the
//! next event to push, the keep-alive timer and shutdown.
//!
//! Client frames are served one at a time, in order: the response to a request is written
//! before any event that arrived while it was in flight, so a client always sees its answer
//! before the events the answer caused.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Instrument;

use crate::envelope;
use crate::error::WireCode;
use crate::limits::{self, Limit};
use crate::link::now_ms;
use crate::registry::{EventFrame, Socket};
use crate::state::Shared;
use crate::{closing, closing::linger};

/// Everything a socket task needs, gathered at the upgrade.
pub struct Session {
    pub socket: Arc<Socket>,
    /// `videochatRequested` frames for the rings that rang when the socket connected.
    pub replay: Vec<String>,
}

pub type Ws = WebSocketStream<TcpStream>;

/// How a socket's life ended.
enum Ending {
    /// The client sent Close; tungstenite has queued the reply.
    ClientClosed,
    /// We close, with this code and reason.
    ServerCloses(CloseCode, &'static str),
    /// The client broke the protocol (RFC 6455 §7.4.1): we close with this code, then read out
    /// what it still sends so that the close frame is not lost to a reset.
    Violation(CloseCode, &'static str),
    /// The connection broke.
    Broken,
}

/// Serves a socket until it ends. Presence is dropped *before* the close handshake completes, so
/// once a client has seen its close acknowledged, nobody can reach it any more.
pub async fn run(ws: Ws, session: Session, shared: Arc<Shared>) {
    let (mut ws, ending) = serve(ws, &session, &shared).await;
    let socket = &session.socket;
    let delivered = shared.registry.close(socket);
    metrics::gauge!("videochat_gateway_open_sockets").decrement(1.0);
    shared
        .link
        .forget(&socket.connection_id, &socket.user_id, delivered)
        .await;
    let finish = async {
        match ending {
            Ending::ClientClosed => {
                let _ = ws.flush().await;
            }
            Ending::ServerCloses(code, reason) => {
                count_close(code);
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = ws.close(Some(frame)).await;
            }
            Ending::Violation(code, reason) => {
                count_close(code);
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                if ws.close(Some(frame)).await.is_ok() {
                    linger(ws.get_mut()).await;
                }
            }
            Ending::Broken => {}
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), finish).await;
}

async fn serve(mut ws: Ws, session: &Session, shared: &Shared) -> (Ws, Ending) {
    let config = &shared.config;
    let socket = &session.socket;
    let limiter = rate_limiter(config.rate_limit_per_s, config.rate_limit_burst);
    let mut ping = tokio::time::interval(config.ping_interval());
    ping.tick().await;
    let mut last_heard = Instant::now();

    for text in &session.replay {
        if send(&mut ws, text.clone().into(), Sent::Replay)
            .await
            .is_err()
        {
            return (ws, Ending::Broken);
        }
    }

    let ending = loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => break Ending::ServerCloses(CloseCode::Restart, "server restarting"),
            frames = socket.next() => {
                let Ok(frames) = frames else {
                    break Ending::ServerCloses(CloseCode::Again, "too slow to keep up with events");
                };
                if !feed_events(&mut ws, frames).await || ws.flush().await.is_err() {
                    break Ending::Broken;
                }
            }
            message = ws.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    // Over VIDEOCHAT_MAX_MESSAGE_BYTES (1009), not UTF-8 (1007), bad framing
                    // (1002): closed with the RFC 6455 code; see `closing`.
                    Some(Err(error)) => match closing::on_read_error(&error) {
                        Some((code, reason)) => {
                            tracing::info!(%error, code = u16::from(code), "client broke the protocol; closing");
                            break Ending::Violation(code, reason);
                        }
                        None => break Ending::Broken,
                    },
                    None => break Ending::Broken,
                };
                last_heard = Instant::now();
                match message {
                    Message::Text(text) => {
                        let (reply, sent) = if limiter.check().is_err() {
                            limits::hit(Limit::Rate);
                            metrics::counter!("videochat_gateway_frames_in_total", "type" => "any", "result" => "rate_limited").increment(1);
                            (rate_limited(text.as_str()), Sent::Response("any", "1003"))
                        } else {
                            // Boxed: the call's state lives only while a request is in flight,
                            // not in every idle socket's task.
                            Box::pin(handle(text.as_str(), socket, shared)).await
                        };
                        // The answer first, then the events already queued (often caused by
                        // this very request: an accept's `videochatAccepted` to the
                        // acceptor's own socket), written together: one flush, one TCP
                        // segment, where there were two.
                        count_sent(sent);
                        let written = ws.feed(Message::Text(reply.into())).await.is_ok()
                            && feed_events(&mut ws, socket.take_ready()).await;
                        if !written || ws.flush().await.is_err() {
                            break Ending::Broken;
                        }
                    }
                    Message::Binary(_) => {
                        let reply = envelope::failure(None, None, WireCode::InvalidFrame, "binary frames are not supported: send JSON text frames", now_ms());
                        if send(&mut ws, reply.into(), Sent::Response("binary", "1000")).await.is_err() {
                            break Ending::Broken;
                        }
                    }
                    Message::Close(_) => break Ending::ClientClosed,
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > config.idle_timeout() {
                    tracing::info!(connection = %socket.connection_id, "socket silent past its deadline; closing");
                    break Ending::ServerCloses(CloseCode::Policy, "idle timeout");
                }
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break Ending::Broken;
                }
            }
        }
    };
    (ws, ending)
}

/// Counts a close the server initiates, by code (`videochat_gateway_closes_total`).
fn count_close(code: CloseCode) {
    metrics::counter!("videochat_gateway_closes_total", "code" => u16::from(code).to_string())
        .increment(1);
}

/// What a frame sent to a client is, for the frames-out counter.
#[derive(Clone, Copy)]
enum Sent {
    /// A response: the request type and the result (`ok` or the error code).
    Response(&'static str, &'static str),
    /// A server event of this type.
    Event(&'static str),
    /// A ring replayed to a socket that just connected.
    Replay,
}

async fn send(
    ws: &mut Ws,
    text: tokio_tungstenite::tungstenite::Utf8Bytes,
    sent: Sent,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    count_sent(sent);
    ws.send(Message::Text(text)).await
}

/// Queues `frames` on the socket's sink, unflushed; `false` once the socket is broken.
async fn feed_events(ws: &mut Ws, frames: Vec<Arc<EventFrame>>) -> bool {
    for frame in frames {
        count_sent(Sent::Event(frame.name));
        if ws.feed(Message::Text(frame.text.clone())).await.is_err() {
            return false;
        }
    }
    true
}

fn count_sent(sent: Sent) {
    let (kind, frame_type, result) = match sent {
        Sent::Response(frame_type, result) => ("response", frame_type, result),
        Sent::Event(frame_type) => ("event", frame_type, "ok"),
        Sent::Replay => ("replay", envelope::EVENT_REQUESTED, "ok"),
    };
    metrics::counter!(
        "videochat_gateway_frames_out_total",
        "kind" => kind,
        "type" => frame_type,
        "result" => result
    )
    .increment(1);
}

/// Serves one text frame: decode, call the service, encode the answer.
async fn handle(text: &str, socket: &Socket, shared: &Shared) -> (String, Sent) {
    let (user_id, connection_id) = (socket.user_id.as_str(), socket.connection_id.as_str());
    let now = now_ms();
    let inbound = match envelope::decode(text, shared.config.max_frame_bytes) {
        Ok(inbound) => inbound,
        Err(error) => {
            let result = error_label(error.code);
            metrics::counter!("videochat_gateway_frames_in_total", "type" => "invalid", "result" => result).increment(1);
            let text = envelope::failure(
                error.kind.as_deref(),
                error.event_id.as_deref(),
                error.code,
                &error.message,
                now,
            );
            return (text, Sent::Response("invalid", result));
        }
    };
    let span = tracing::info_span!(
        "websocket.frame",
        otel.name = inbound.kind,
        otel.kind = "server",
        websocket.type = inbound.kind,
        websocket.event_id = %inbound.event_id,
        videochat.user = user_id,
        videochat.socket = connection_id,
        trace_id = tracing::field::Empty,
    );
    if let Some(traceparent) = &inbound.traceparent {
        videochat_telemetry::set_parent_from_traceparent(&span, traceparent);
    }
    span.record("trace_id", videochat_telemetry::trace_id(&span));
    let result = shared
        .upstream
        .call(user_id, &inbound)
        .instrument(span.clone())
        .await;
    span.in_scope(|| match &result {
        Ok(_) => tracing::debug!(code = 0, "frame answered"),
        Err(error) => {
            tracing::debug!(code = error.code.as_i32(), error.message = %error.message, "frame answered")
        }
    });
    let now = now_ms();
    match result {
        Ok(data) => {
            metrics::counter!("videochat_gateway_frames_in_total", "type" => inbound.kind, "result" => "ok").increment(1);
            let text = envelope::success(inbound.kind, &inbound.event_id, data, now);
            (text, Sent::Response(inbound.kind, "ok"))
        }
        Err(error) => {
            let result = error_label(error.code);
            metrics::counter!("videochat_gateway_frames_in_total", "type" => inbound.kind, "result" => result).increment(1);
            let text = envelope::failure(
                Some(inbound.kind),
                Some(&inbound.event_id),
                error.code,
                &error.message,
                now,
            );
            (text, Sent::Response(inbound.kind, result))
        }
    }
}

fn rate_limited(text: &str) -> String {
    // Echo what can be cheaply read, without serving the frame.
    let (kind, event_id) = match envelope::decode(text, usize::MAX) {
        Ok(inbound) => (Some(inbound.kind.to_owned()), Some(inbound.event_id)),
        Err(error) => (error.kind, error.event_id),
    };
    envelope::failure(
        kind.as_deref(),
        event_id.as_deref(),
        WireCode::RateLimited,
        "rate limit exceeded on this socket; slow down",
        now_ms(),
    )
}

fn error_label(code: WireCode) -> &'static str {
    match code {
        WireCode::InvalidFrame => "1000",
        WireCode::UnknownType => "1001",
        WireCode::InvalidData => "1002",
        WireCode::RateLimited => "1003",
        WireCode::Internal => "1004",
        WireCode::Service(1021) => "1021",
        WireCode::Service(10011) => "10011",
        WireCode::Service(10012) => "10012",
        WireCode::Service(10013) => "10013",
        WireCode::Service(10014) => "10014",
        WireCode::Service(10015) => "10015",
        WireCode::Service(10016) => "10016",
        WireCode::Service(10017) => "10017",
        WireCode::Service(10018) => "10018",
        WireCode::TooManySockets | WireCode::Service(10019) => "10019",
        WireCode::Service(_) => "other",
    }
}

fn rate_limiter(per_s: u32, burst: u32) -> DefaultDirectRateLimiter {
    let per_s = NonZeroU32::new(per_s.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(per_s).allow_burst(burst))
}
