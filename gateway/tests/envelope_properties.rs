//! Properties of the wire envelope (`envelope::decode`), over generated input:
//!
//! - every valid request frame, encoded the way a client would, decodes to the same request;
//! - nothing a client can send makes the decoder panic, and every refusal carries one of the
//!   envelope's contract codes (1000, 1001, 1002) and echoes only bounded `type`/`event.id`;
//! - every error frame built from a refusal is a well-formed contract error.
//!
//! The fuzz targets under `fuzz/` push the same decoder much further; these run in `cargo test`.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use videochat_gateway::envelope::{self, ClientRequest, Inbound, MAX_ID_LEN};

const MAX_FRAME: usize = 64 * 1024;

/// An id the protocol accepts: 1–128 bytes, no control characters, any script.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{1,40}",
        "[^\\p{Cc}]{1,40}",
        Just("x".repeat(MAX_ID_LEN)),
        Just("\"quoted\" \\ back/slash".to_owned()),
    ]
    .prop_filter("at most 128 bytes", |s| s.len() <= MAX_ID_LEN)
}

fn request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        id().prop_map(|target_user| ClientRequest::RequestDirectVideochat { target_user }),
        (id(), id()).prop_map(|(target_user, videochat_id)| ClientRequest::Invite {
            target_user,
            videochat_id
        }),
        id().prop_map(
            |videochat_request_id| ClientRequest::AcceptVideochatRequest {
                videochat_request_id
            }
        ),
        id().prop_map(
            |videochat_request_id| ClientRequest::DeclineVideochatRequest {
                videochat_request_id
            }
        ),
        (id(), id()).prop_map(|(videochat_id, videochat_request_id)| {
            ClientRequest::MergeToVideochat {
                videochat_id,
                videochat_request_id,
            }
        }),
        (
            proptest::option::of(0..i64::MAX),
            proptest::option::of(1u32..=100)
        )
            .prop_map(|(before, limit)| ClientRequest::ListCalls { before, limit }),
        (
            proptest::sample::select(envelope::PUSH_PLATFORMS.to_vec()),
            id(),
            any::<bool>()
        )
            .prop_map(|(platform, token, voip)| {
                ClientRequest::RegisterPushDevice(envelope::PushDevice {
                    platform,
                    token,
                    voip,
                })
            }),
        id().prop_map(|token| ClientRequest::UnregisterPushDevice { token }),
    ]
}

fn traceparent() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]")
}

/// The request as a client writes it: the API text's field names, plus whatever extra fields
/// (ignored by the protocol) the client adds.
fn encode(
    request: &ClientRequest,
    event_id: &str,
    date: Option<i64>,
    traceparent: Option<&str>,
    extra: &Map<String, Value>,
) -> String {
    let (kind, mut data) = match request {
        ClientRequest::RequestDirectVideochat { target_user } => (
            envelope::REQUEST_DIRECT,
            json!({ "targetUser": target_user }),
        ),
        ClientRequest::Invite {
            target_user,
            videochat_id,
        } => (
            envelope::INVITE,
            json!({ "targetUser": target_user, "videochatId": videochat_id }),
        ),
        ClientRequest::AcceptVideochatRequest {
            videochat_request_id,
        } => (
            envelope::ACCEPT,
            json!({ "videochatRequestId": videochat_request_id }),
        ),
        ClientRequest::DeclineVideochatRequest {
            videochat_request_id,
        } => (
            envelope::DECLINE,
            json!({ "videochatRequestId": videochat_request_id }),
        ),
        ClientRequest::MergeToVideochat {
            videochat_id,
            videochat_request_id,
        } => (
            envelope::MERGE,
            json!({ "videochatId": videochat_id, "videochatRequestId": videochat_request_id }),
        ),
        // Absent paging fields are sent as null, so that no extra field takes their name.
        ClientRequest::ListCalls { before, limit } => (
            envelope::LIST_CALLS,
            json!({ "before": before, "limit": limit }),
        ),
        ClientRequest::RegisterPushDevice(device) => (
            envelope::REGISTER_PUSH_DEVICE,
            json!({ "platform": device.platform, "token": device.token, "voip": device.voip }),
        ),
        ClientRequest::UnregisterPushDevice { token } => {
            (envelope::UNREGISTER_PUSH_DEVICE, json!({ "token": token }))
        }
    };
    let mut event = json!({ "id": event_id });
    if let Some(date) = date {
        event["date"] = json!(date);
    }
    if let Some(traceparent) = traceparent {
        event["traceparent"] = json!(traceparent);
    }
    let mut frame = json!({ "type": kind, "data": {}, "event": event });
    for (name, value) in extra {
        if let Value::Object(fields) = &mut data
            && !fields.contains_key(name)
        {
            fields.insert(name.clone(), value.clone());
        }
        if let Value::Object(top) = &mut frame
            && !top.contains_key(name)
        {
            top.insert(name.clone(), value.clone());
        }
    }
    frame["data"] = data;
    frame.to_string()
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        Just(Value::from("videochat:invite")),
        Just(Value::from("x".repeat(300))),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("data".to_owned()),
                    Just("event".to_owned()),
                    Just("id".to_owned()),
                    Just("targetUser".to_owned()),
                    Just("videochatId".to_owned()),
                    Just("videochatRequestId".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn extra_fields() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z]{1,10}", json_value(), 0..3)
        .prop_map(|m| m.into_iter().collect())
}

/// What every refusal must look like; and the error frame made from it must be well formed.
fn assert_contract_refusal(error: &envelope::FrameError) -> Result<(), TestCaseError> {
    let code = error.code.as_i32();
    prop_assert!(
        [1000, 1001, 1002].contains(&code),
        "decode refused with {code}"
    );
    prop_assert!(!error.message.is_empty());
    prop_assert!(error.kind.as_ref().is_none_or(|k| k.len() <= 200));
    prop_assert!(
        error
            .event_id
            .as_ref()
            .is_none_or(|id| id.len() <= MAX_ID_LEN)
    );
    let frame: Value = serde_json::from_str(&envelope::failure(
        error.kind.as_deref(),
        error.event_id.as_deref(),
        error.code,
        &error.message,
        1,
    ))
    .expect("error frames are JSON");
    prop_assert_eq!(&frame["error"]["status"], &json!(true));
    prop_assert_eq!(&frame["error"]["code"], &json!(code));
    prop_assert!(frame.get("data").is_none());
    Ok(())
}

fn check_any(text: &str) -> Result<(), TestCaseError> {
    match envelope::decode(text, MAX_FRAME) {
        Ok(inbound) => {
            prop_assert!(text.len() <= MAX_FRAME);
            prop_assert!(!inbound.event_id.is_empty() && inbound.event_id.len() <= MAX_ID_LEN);
            prop_assert!(!inbound.event_id.chars().any(char::is_control));
        }
        Err(error) => assert_contract_refusal(&error)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_valid_request_round_trips(
        request in request(),
        event_id in id(),
        date in proptest::option::of(any::<i64>()),
        traceparent in traceparent(),
        extra in extra_fields(),
    ) {
        let text = encode(&request, &event_id, date, traceparent.as_deref(), &extra);
        let decoded = envelope::decode(&text, MAX_FRAME);
        let kind = match &request {
            ClientRequest::RequestDirectVideochat { .. } => envelope::REQUEST_DIRECT,
            ClientRequest::Invite { .. } => envelope::INVITE,
            ClientRequest::AcceptVideochatRequest { .. } => envelope::ACCEPT,
            ClientRequest::DeclineVideochatRequest { .. } => envelope::DECLINE,
            ClientRequest::MergeToVideochat { .. } => envelope::MERGE,
            ClientRequest::ListCalls { .. } => envelope::LIST_CALLS,
            ClientRequest::RegisterPushDevice(_) => envelope::REGISTER_PUSH_DEVICE,
            ClientRequest::UnregisterPushDevice { .. } => envelope::UNREGISTER_PUSH_DEVICE,
        };
        prop_assert_eq!(
            decoded,
            Ok(Inbound { kind, event_id, traceparent, request }),
            "{}", text
        );
    }

    #[test]
    fn any_string_is_decoded_or_refused_with_a_contract_code(text in ".{0,200}") {
        check_any(&text)?;
    }

    #[test]
    fn any_json_value_is_decoded_or_refused_with_a_contract_code(value in json_value()) {
        check_any(&value.to_string())?;
    }

    #[test]
    fn a_valid_frame_with_one_part_replaced_is_refused_with_a_contract_code_or_still_valid(
        request in request(),
        event_id in id(),
        part in prop_oneof![
            Just("type"), Just("data"), Just("event"), Just("event.id"), Just("event.date"),
            Just("data.targetUser"), Just("data.videochatId"), Just("data.videochatRequestId"),
        ],
        replacement in json_value(),
    ) {
        let text = encode(&request, &event_id, Some(1), None, &Map::new());
        let mut frame: Value = serde_json::from_str(&text).unwrap();
        match part.split_once('.') {
            Some((outer, inner)) => frame[outer][inner] = replacement,
            None => frame[part] = replacement,
        }
        let text = frame.to_string();
        check_any(&text)?;
        // A refusal of a frame with a readable request type echoes that type.
        if let (Err(error), Some(Value::String(kind))) =
            (envelope::decode(&text, MAX_FRAME), frame.get("type"))
        {
            let echoed = error.kind.as_deref().expect("type echoed");
            prop_assert!(kind.starts_with(echoed));
            if kind.len() <= 200 {
                prop_assert_eq!(echoed, kind.as_str());
            }
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_never_served(request in request(), event_id in id(), max in 1usize..256) {
        let text = encode(&request, &event_id, None, None, &Map::new());
        prop_assume!(text.len() > max);
        let error = envelope::decode(&text, max).unwrap_err();
        prop_assert_eq!(error.code.as_i32(), 1002);
    }
}
