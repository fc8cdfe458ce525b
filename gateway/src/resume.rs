//! Resuming: the `lastEventId` a client sends when it connects, and the frames a new socket is
//! owed before its live events (the service decides which; see `docs/protocol.md`,
//! "Reconnecting without losing events").

use serde_json::{Value, json};
use videochat_proto::v1 as pb;

use crate::envelope;
use crate::frames;

/// The query parameter carrying the last event id the client saw.
pub const LAST_EVENT_ID: &str = "lastEventId";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("lastEventId must be an event id this server sent (a decimal number), got {0:?}")]
pub struct BadLastEventId(String);

/// The client's resume position from the upgrade's query string, if it sent one. Ids of replayed
/// rings (`replay_…`) and resync frames are not positions: resuming from one is refused.
pub fn last_event_id(query: Option<&str>) -> Result<Option<u64>, BadLastEventId> {
    let Some(value) = query.and_then(|query| {
        query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == LAST_EVENT_ID).then_some(value)
        })
    }) else {
        return Ok(None);
    };
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadLastEventId(value.chars().take(40).collect()));
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| BadLastEventId(value.to_owned()))
}

/// The frames a new socket is sent first, in order: a resync snapshot, or the events it missed
/// (under their own ids), then the live rings it has not been sent as events, then the calls
/// the user missed since they last listed them.
pub fn owed_frames(
    missed: &[pb::Event],
    resync: Option<&pb::Resync>,
    rings: &[pb::VideochatRequested],
    missed_calls: Option<&pb::MissedCalls>,
    now_ms: i64,
) -> Vec<String> {
    let mut frames = Vec::with_capacity(missed.len() + rings.len() + 1);
    if let Some(resync) = resync {
        let id = format!("resync_{}", uuid::Uuid::now_v7().simple());
        frames.push(envelope::event(
            envelope::EVENT_RESYNC,
            &id,
            resync_data(resync),
            now_ms,
        ));
    }
    for event in missed {
        if let Some(kind) = &event.kind {
            let (name, data) = frames::event(kind);
            frames.push(envelope::event(name, &event.seq.to_string(), data, now_ms));
        }
    }
    for ring in rings {
        // Replays get a fresh id: they are today's view of the ring, not a stored event.
        let id = format!("replay_{}", uuid::Uuid::now_v7().simple());
        frames.push(envelope::event(
            envelope::EVENT_REQUESTED,
            &id,
            frames::ring(ring),
            now_ms,
        ));
    }
    if let Some(missed_calls) = missed_calls.filter(|m| m.count > 0) {
        // Like replayed rings, a view of now rather than a stored event.
        let id = format!("missed_{}", uuid::Uuid::now_v7().simple());
        frames.push(envelope::event(
            envelope::EVENT_MISSED_CALLS,
            &id,
            frames::missed_calls(missed_calls),
            now_ms,
        ));
    }
    frames
}

fn resync_data(resync: &pb::Resync) -> Value {
    json!({
        "reason": "history_unavailable",
        "incoming": resync.incoming.iter().map(frames::ring).collect::<Vec<_>>(),
        "outgoing": resync.outgoing.iter().map(|ring| {
            let mut data = json!({
                "videochatRequestId": ring.videochat_request_id,
                "targetUser": ring.target_user.as_ref().map(frames::user).unwrap_or_else(|| json!({})),
                "expiresAt": ring.expires_at,
            });
            if !ring.videochat_id.is_empty() && let Value::Object(object) = &mut data {
                object.insert("videochatId".into(), json!(ring.videochat_id));
            }
            data
        }).collect::<Vec<_>>(),
        "videochats": resync.videochats.iter().map(|videochat| json!({
            "videochatId": videochat.videochat_id,
            "participants": videochat.participants.iter().map(frames::user).collect::<Vec<_>>(),
            "counter": videochat.counter,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_event_id_is_a_position_or_refused() {
        assert_eq!(last_event_id(None), Ok(None));
        assert_eq!(last_event_id(Some("access_token=x")), Ok(None));
        assert_eq!(
            last_event_id(Some("access_token=x&lastEventId=42")),
            Ok(Some(42))
        );
        assert_eq!(last_event_id(Some("lastEventId=0")), Ok(Some(0)));
        for bad in ["", "-1", "4a", "replay_0190", "99999999999999999999999"] {
            assert!(
                last_event_id(Some(&format!("lastEventId={bad}"))).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn a_resync_comes_first_and_missed_events_keep_their_positions() {
        let event = pb::Event {
            seq: 7,
            kind: Some(pb::event::Kind::VideochatAccepted(pb::VideochatAccepted {
                videochat_request_id: "r1".into(),
            })),
            ..Default::default()
        };
        let ring = pb::VideochatRequested {
            videochat_request_id: "r2".into(),
            ..Default::default()
        };
        let frames = owed_frames(&[event], Some(&pb::Resync::default()), &[ring], None, 1);
        let parsed: Vec<Value> = frames
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        assert_eq!(parsed[0]["type"], envelope::EVENT_RESYNC);
        assert_eq!(parsed[0]["data"]["reason"], "history_unavailable");
        assert_eq!(parsed[1]["event"]["id"], "7");
        assert_eq!(parsed[1]["type"], envelope::EVENT_ACCEPTED);
        assert!(
            parsed[2]["event"]["id"]
                .as_str()
                .unwrap()
                .starts_with("replay_")
        );
    }
}
