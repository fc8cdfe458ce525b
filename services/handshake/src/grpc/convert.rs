//! Conversions between protobuf messages and domain types. Incoming messages are parsed into
//! domain types (so a bad id is a 1002 naming the field); outgoing ones are built from them.

use tonic::Status;
use videochat_proto::v1 as pb;

use crate::history::CallEntry;

use super::status::invalid;
use crate::domain::{
    Avatar3D, Event, IdempotencyKey, InvalidId, JoinCredentials, Permissions, Ring, UserId,
    UserPatch, UserProfile,
};
use crate::store::Snapshot;

pub(crate) fn parse_id<T>(
    field: &'static str,
    value: String,
    parse: impl FnOnce(String) -> Result<T, InvalidId>,
) -> Result<T, Status> {
    parse(value).map_err(|e| invalid(field, e))
}

/// The acting user and idempotency key of a handshake call.
pub(crate) fn actor(actor: Option<pb::Actor>) -> Result<(UserId, IdempotencyKey), Status> {
    let actor = actor.ok_or_else(|| invalid("actor", "is required"))?;
    let user = parse_id("actor.user_id", actor.user_id, UserId::parse)?;
    let key = parse_id(
        "actor.idempotency_key",
        actor.idempotency_key,
        IdempotencyKey::parse,
    )?;
    Ok((user, key))
}

pub(crate) fn user_to_pb(user: &UserProfile) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        privacy_mode: user.privacy_mode,
        avatar: user.avatar.clone(),
        avatar_3d: user
            .avatar_3d
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(|a| pb::Avatar3D {
                asset_id: a.asset_id.clone(),
                asset_skins: a.asset_skins.clone().into_iter().collect(),
                avatar_url: a.avatar_url.clone(),
                avatar_user_id: a.avatar_user_id.clone(),
            }),
        company_name: user.company_name.clone(),
        company_title: user.company_title.clone(),
    }
}

/// Longest free-text profile field we store.
const MAX_PROFILE_FIELD: usize = 1024;

fn text(field: &'static str, value: String) -> Result<String, Status> {
    if value.len() > MAX_PROFILE_FIELD {
        return Err(invalid(
            field,
            format!("must be at most {MAX_PROFILE_FIELD} bytes"),
        ));
    }
    Ok(value)
}

pub(crate) fn user_from_pb(user: pb::User) -> Result<UserProfile, Status> {
    let avatar_3d = match user.avatar_3d {
        Some(a) => Some(Avatar3D {
            asset_id: text("user.avatar_3d.asset_id", a.asset_id)?,
            asset_skins: a.asset_skins.into_iter().collect(),
            avatar_url: text("user.avatar_3d.avatar_url", a.avatar_url)?,
            avatar_user_id: text("user.avatar_3d.avatar_user_id", a.avatar_user_id)?,
        }),
        None => None,
    };
    if !matches!(user.privacy_mode, 0 | 1) {
        return Err(invalid(
            "user.privacy_mode",
            "must be 0 (default) or 1 (incognito)",
        ));
    }
    Ok(UserProfile {
        id: parse_id("user.id", user.id, UserId::parse)?,
        first_name: text("user.first_name", user.first_name)?,
        last_name: text("user.last_name", user.last_name)?,
        privacy_mode: user.privacy_mode,
        avatar: text("user.avatar", user.avatar)?,
        avatar_3d: avatar_3d.filter(|a| !a.is_empty()),
        company_name: text("user.company_name", user.company_name)?,
        company_title: text("user.company_title", user.company_title)?,
    })
}

pub(crate) fn patch_from_pb(patch: Option<pb::UserPatch>) -> Result<UserPatch, Status> {
    let Some(patch) = patch else {
        return Ok(UserPatch::default());
    };
    let opt = |field, v: Option<String>| v.map(|v| text(field, v)).transpose();
    Ok(UserPatch {
        first_name: opt("profile.first_name", patch.first_name)?,
        last_name: opt("profile.last_name", patch.last_name)?,
        privacy_mode: patch.privacy_mode,
        avatar: opt("profile.avatar", patch.avatar)?,
        company_name: opt("profile.company_name", patch.company_name)?,
        company_title: opt("profile.company_title", patch.company_title)?,
    })
}

pub(crate) fn permissions_to_pb(p: &Permissions) -> pb::Permissions {
    pb::Permissions {
        is_moderator: p.is_moderator(),
        is_owner: p.is_owner,
        is_panelist: p.is_panelist,
        is_presenter: p.is_presenter,
        is_co_presenter: p.is_co_presenter,
        is_promoted: p.is_promoted,
        is_participant: p.is_participant,
        is_listener: p.is_listener,
    }
}

pub(crate) fn credentials_to_pb(c: &JoinCredentials) -> pb::JoinCredentials {
    pb::JoinCredentials {
        videochat_id: c.videochat_id.to_string(),
        videochat_mode: c.mode.as_str().to_owned(),
        videochat_engine: c.engine.clone(),
        videochat_app_id: c.app_id.clone(),
        videochat_url: c.url.clone(),
        room: c.room.clone(),
        identity: c.identity.to_string(),
        uid: c.uid,
        token: c.token.clone(),
        shared_secret: c.shared_secret.clone(),
        user: Some(user_to_pb(&c.user)),
        permissions: Some(permissions_to_pb(&c.permissions)),
        videochat_request_id: c
            .videochat_request_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

pub(crate) fn ring_to_pb(ring: &Ring) -> pb::VideochatRequested {
    pb::VideochatRequested {
        videochat_request_id: ring.request_id.to_string(),
        user: Some(user_to_pb(&ring.user)),
        participants: ring.participants.iter().map(user_to_pb).collect(),
        counter: ring.counter,
        expires_at: ring.expires_at_ms,
        videochat_id: ring
            .videochat_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    }
}

pub(crate) fn event_kind_to_pb(event: &Event) -> pb::event::Kind {
    match event {
        Event::VideochatRequested(ring) => pb::event::Kind::VideochatRequested(ring_to_pb(ring)),
        Event::DirectVideochatRequestAccepted(credentials) => {
            pb::event::Kind::DirectVideochatRequestAccepted(pb::DirectVideochatRequestAccepted {
                credentials: Some(credentials_to_pb(credentials)),
            })
        }
        Event::VideochatAccepted { request_id } => {
            pb::event::Kind::VideochatAccepted(pb::VideochatAccepted {
                videochat_request_id: request_id.to_string(),
            })
        }
        Event::VideochatDeclined { request_id, reason } => {
            pb::event::Kind::VideochatDeclined(pb::VideochatDeclined {
                videochat_request_id: request_id.to_string(),
                reason: reason.as_str().to_owned(),
            })
        }
    }
}

pub(crate) fn snapshot_to_pb(snapshot: &Snapshot) -> pb::Resync {
    pb::Resync {
        incoming: snapshot.incoming.iter().map(ring_to_pb).collect(),
        outgoing: snapshot
            .outgoing
            .iter()
            .map(|ring| pb::OutgoingRing {
                videochat_request_id: ring.request_id.to_string(),
                target_user: Some(user_to_pb(&ring.target)),
                videochat_id: ring
                    .videochat_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                expires_at: ring.expires_at_ms,
            })
            .collect(),
        videochats: snapshot
            .videochats
            .iter()
            .map(|videochat| pb::VideochatSummary {
                videochat_id: videochat.id.to_string(),
                participants: videochat.participants.iter().map(user_to_pb).collect(),
                counter: videochat.counter,
            })
            .collect(),
    }
}

pub(crate) fn call_to_pb(call: &CallEntry) -> pb::CallEntry {
    pb::CallEntry {
        videochat_request_id: call.request_id.to_string(),
        direction: call.direction.as_str().to_owned(),
        user: Some(user_to_pb(&call.other)),
        kind: call.kind.as_str().to_owned(),
        outcome: call.outcome.as_str().to_owned(),
        reason: call.outcome.reason().unwrap_or_default().to_owned(),
        videochat_id: call
            .videochat_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        requested_at: call.requested_at_ms,
        answered_at: call.answered_at_ms,
        ended_at: call.ended_at_ms,
        in_room_ms: call.in_room_ms,
    }
}

pub(crate) fn missed_calls_to_pb(count: u32, latest: &[CallEntry]) -> pb::MissedCalls {
    pb::MissedCalls {
        count,
        latest: latest.iter().map(call_to_pb).collect(),
    }
}
