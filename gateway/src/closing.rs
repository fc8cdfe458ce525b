//! How a socket ends when its client breaks the WebSocket protocol: with the close code
//! RFC 6455 §7.4.1 gives the fault, never by dropping the TCP connection (which a client sees as
//! 1006, "abnormal", and cannot tell from a network failure).
//!
//! | fault | code |
//! |---|---|
//! | a text message that is not UTF-8 (§8.1) | 1007 |
//! | a frame breaking the framing rules: unmasked, reserved bits or opcodes, a fragmented or oversized control frame, a continuation out of place, a malformed close frame | 1002 |
//! | a message or frame over `VIDEOCHAT_MAX_MESSAGE_BYTES` | 1009 |
//!
//! A connection that simply breaks (reset, EOF without a close) has nobody left to tell.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::limits::{self, Limit};

/// Most bytes read and discarded after a violation's close frame.
const LINGER_BYTES: usize = 1024 * 1024;

/// The close code and reason for a read error, or `None` when the connection is simply gone.
/// Counts the message-size limit when it is the cause.
pub fn on_read_error(error: &Error) -> Option<(CloseCode, &'static str)> {
    let close = match error {
        Error::Capacity(_) => {
            limits::hit(Limit::MessageSize);
            (CloseCode::Size, "message too big")
        }
        Error::Utf8(_) => (CloseCode::Invalid, "text message is not valid UTF-8"),
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return None,
        Error::Protocol(violation) => (CloseCode::Protocol, reason(violation)),
        _ => return None,
    };
    Some(close)
}

/// A short reason for the close frame (the limit is 123 bytes).
fn reason(violation: &ProtocolError) -> &'static str {
    match violation {
        ProtocolError::UnmaskedFrameFromClient => "client frames must be masked",
        ProtocolError::NonZeroReservedBits => "reserved bits set without an extension",
        ProtocolError::UnknownControlFrameType(_)
        | ProtocolError::UnknownDataFrameType(_)
        | ProtocolError::InvalidOpcode(_) => "reserved opcode",
        ProtocolError::FragmentedControlFrame => "control frames must not be fragmented",
        ProtocolError::ControlFrameTooBig => "control frame payload over 125 bytes",
        ProtocolError::UnexpectedContinueFrame | ProtocolError::ExpectedFragment(_) => {
            "continuation frame out of sequence"
        }
        ProtocolError::InvalidCloseSequence => "malformed close frame",
        _ => "protocol violation",
    }
}

/// After the close frame for a violation: stop writing, then read out (and drop) what the client
/// still sends, up to a bound, until it closes. Closing a TCP socket with unread bytes makes the
/// kernel send a reset, which can destroy the close frame before the client reads it. The caller
/// bounds the time this takes.
pub async fn linger<S>(io: &mut S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if io.shutdown().await.is_err() {
        return;
    }
    // On the heap, not in the future: an async fn's locals live in the state of every socket
    // task that could reach them, and a 4 KiB array here cost each idle socket 4 KiB.
    let mut buffer = vec![0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match io.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_map_to_their_rfc_codes() {
        let code = |error: Error| on_read_error(&error).map(|(code, _)| u16::from(code));
        assert_eq!(code(Error::Utf8("bad".into())), Some(1007));
        assert_eq!(
            code(Error::Protocol(ProtocolError::UnmaskedFrameFromClient)),
            Some(1002)
        );
        assert_eq!(
            code(Error::Protocol(ProtocolError::UnknownDataFrameType(3))),
            Some(1002)
        );
        assert_eq!(
            code(Error::Capacity(
                tokio_tungstenite::tungstenite::error::CapacityError::MessageTooLong {
                    size: 2,
                    max_size: 1
                }
            )),
            Some(1009)
        );
        assert_eq!(
            code(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)),
            None
        );
        assert_eq!(code(Error::ConnectionClosed), None);
        assert_eq!(code(Error::Io(std::io::ErrorKind::BrokenPipe.into())), None);
    }
}
