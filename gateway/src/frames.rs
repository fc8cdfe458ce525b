//! The JSON shapes of `data` in responses and events, built from the gRPC messages. Field names
//! are the API text's.

use serde_json::{Map, Value, json};
use videochat_proto::v1 as pb;

use crate::envelope;

pub fn user(user: &pb::User) -> Value {
    let mut object = Map::new();
    object.insert("id".into(), json!(user.id));
    object.insert("firstName".into(), json!(user.first_name));
    object.insert("lastName".into(), json!(user.last_name));
    object.insert("privacyMode".into(), json!(user.privacy_mode));
    object.insert("avatar".into(), json!(user.avatar));
    if let Some(avatar) = &user.avatar_3d {
        let skins: Map<String, Value> = avatar
            .asset_skins
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        object.insert(
            "avatar3D".into(),
            json!({
                "assetId": avatar.asset_id,
                "assetSkins": skins,
                "avatarUrl": avatar.avatar_url,
                "avatarUserId": avatar.avatar_user_id,
            }),
        );
    }
    object.insert("companyName".into(), json!(user.company_name));
    object.insert("companyTitle".into(), json!(user.company_title));
    Value::Object(object)
}

fn user_or_empty(u: &Option<pb::User>) -> Value {
    u.as_ref().map(user).unwrap_or_else(|| json!({}))
}

pub fn credentials(c: &pb::JoinCredentials) -> Value {
    let p = c.permissions.unwrap_or_default();
    let mut data = json!({
        "videochatId": c.videochat_id,
        "videochatMode": c.videochat_mode,
        "videochatEngine": c.videochat_engine,
        "videochatAppId": c.videochat_app_id,
        "videochatUrl": c.videochat_url,
        "room": c.room,
        "identity": c.identity,
        "uid": c.uid,
        "token": c.token,
        "sharedSecret": c.shared_secret,
        "user": user_or_empty(&c.user),
        "permissions": {
            "isModerator": p.is_moderator,
            "isOwner": p.is_owner,
            "isPanelist": p.is_panelist,
            "isPresenter": p.is_presenter,
            "isCoPresenter": p.is_co_presenter,
            "isPromoted": p.is_promoted,
            "isParticipant": p.is_participant,
            "isListener": p.is_listener,
        },
    });
    if !c.videochat_request_id.is_empty()
        && let Value::Object(object) = &mut data
    {
        object.insert("videochatRequestId".into(), json!(c.videochat_request_id));
    }
    data
}

pub fn ring(r: &pb::VideochatRequested) -> Value {
    let mut data = json!({
        "videochatRequestId": r.videochat_request_id,
        "user": user_or_empty(&r.user),
        "participants": r.participants.iter().map(user).collect::<Vec<_>>(),
        "counter": r.counter,
        "expiresAt": r.expires_at,
    });
    if !r.videochat_id.is_empty()
        && let Value::Object(object) = &mut data
    {
        object.insert("videochatId".into(), json!(r.videochat_id));
    }
    data
}

/// One call of the history (`videochat:listCalls`, `videochat:missedCalls`): absent fields
/// are left out rather than sent empty.
pub fn call(c: &pb::CallEntry) -> Value {
    let mut object = Map::new();
    object.insert("videochatRequestId".into(), json!(c.videochat_request_id));
    object.insert("direction".into(), json!(c.direction));
    object.insert("user".into(), user_or_empty(&c.user));
    object.insert("kind".into(), json!(c.kind));
    object.insert("outcome".into(), json!(c.outcome));
    if !c.reason.is_empty() {
        object.insert("reason".into(), json!(c.reason));
    }
    if !c.videochat_id.is_empty() {
        object.insert("videochatId".into(), json!(c.videochat_id));
    }
    object.insert("requestedAt".into(), json!(c.requested_at));
    for (name, value) in [
        ("answeredAt", c.answered_at),
        ("endedAt", c.ended_at),
        ("inRoomMs", c.in_room_ms),
    ] {
        if let Some(value) = value {
            object.insert(name.into(), json!(value));
        }
    }
    Value::Object(object)
}

/// The `data` of a `videochat:listCalls` response.
pub fn call_page(page: &pb::ListCallsResponse) -> Value {
    let mut data = json!({
        "calls": page.calls.iter().map(call).collect::<Vec<_>>(),
        "missedCount": page.missed_count,
    });
    if let (Some(next), Value::Object(object)) = (page.next, &mut data) {
        object.insert("next".into(), json!(next));
    }
    data
}

/// The `data` of `videochat:missedCalls`.
pub fn missed_calls(missed: &pb::MissedCalls) -> Value {
    json!({
        "count": missed.count,
        "latest": missed.latest.iter().map(call).collect::<Vec<_>>(),
    })
}

/// The frame `type` and `data` of an event.
pub fn event(kind: &pb::event::Kind) -> (&'static str, Value) {
    match kind {
        pb::event::Kind::VideochatRequested(r) => (envelope::EVENT_REQUESTED, ring(r)),
        pb::event::Kind::DirectVideochatRequestAccepted(a) => (
            envelope::EVENT_DIRECT_ACCEPTED,
            a.credentials
                .as_ref()
                .map(credentials)
                .unwrap_or_else(|| json!({})),
        ),
        pb::event::Kind::VideochatAccepted(a) => (
            envelope::EVENT_ACCEPTED,
            json!({ "videochatRequestId": a.videochat_request_id }),
        ),
        pb::event::Kind::VideochatDeclined(d) => (
            envelope::EVENT_DECLINED,
            json!({ "videochatRequestId": d.videochat_request_id, "reason": d.reason }),
        ),
    }
}
