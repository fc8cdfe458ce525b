//! Any text frame a client sends goes through `envelope::decode` first. Whatever the bytes, it
//! must not panic, must answer a served frame only when it is valid, and must refuse everything
//! else with an envelope contract code (1000, 1001, 1002), echoing only bounded `type` and
//! `event.id`; the error frame made from a refusal must be well-formed JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use videochat_gateway::envelope::{self, MAX_ID_LEN};

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the time they reach the decoder (tungstenite checks, 1007).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The served limit, a tiny one (oversized path), and none (the rate-limited echo path).
    for max in [64 * 1024, 16, usize::MAX] {
        match envelope::decode(text, max) {
            Ok(inbound) => {
                assert!(text.len() <= max);
                assert!(!inbound.event_id.is_empty() && inbound.event_id.len() <= MAX_ID_LEN);
                assert!(!inbound.event_id.chars().any(char::is_control));
                assert!(inbound.kind.starts_with(envelope::PREFIX));
            }
            Err(error) => {
                let code = error.code.as_i32();
                assert!(matches!(code, 1000..=1002), "code {code}");
                assert!(error.kind.as_ref().is_none_or(|k| k.len() <= 200));
                assert!(
                    error
                        .event_id
                        .as_ref()
                        .is_none_or(|id| id.len() <= MAX_ID_LEN)
                );
                let frame = envelope::failure(
                    error.kind.as_deref(),
                    error.event_id.as_deref(),
                    error.code,
                    &error.message,
                    0,
                );
                let frame: Value = serde_json::from_str(&frame).expect("error frame is JSON");
                assert_eq!(frame["error"]["status"], Value::Bool(true));
                assert!(frame.get("data").is_none());
            }
        }
    }
});
