//! Rows to domain types: the one place a database value becomes a `UserId`, a ring, a
//! profile. A value this version cannot read is [`StoreError::Corrupt`], never a panic.

use crate::domain::{
    Avatar3D, Participant, Permissions, RequestKind, RequestStatus, UserId, UserProfile,
    VideochatId, VideochatMode, VideochatRequest,
};
use crate::engine::EngineKind;

use super::{StoreError, StoreResult};

pub(super) type RequestRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
    i64,
);

pub(super) type UserRow = (
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    String,
    String,
);

fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

pub(super) fn request_from_row(row: RequestRow) -> StoreResult<VideochatRequest> {
    let (id, kind, initiator, target, videochat_id, engine, status, created, expires) = row;
    let table = "videochat_requests";
    Ok(VideochatRequest {
        id: id.try_into().map_err(|e| corrupt(table, e))?,
        kind: RequestKind::parse(&kind).ok_or_else(|| corrupt(table, format!("kind {kind}")))?,
        initiator: initiator.try_into().map_err(|e| corrupt(table, e))?,
        target: target.try_into().map_err(|e| corrupt(table, e))?,
        videochat_id: videochat_id
            .map(VideochatId::try_from)
            .transpose()
            .map_err(|e| corrupt(table, e))?,
        engine: engine
            .parse::<EngineKind>()
            .map_err(|e| corrupt(table, e))?,
        status: RequestStatus::parse(&status)
            .ok_or_else(|| corrupt(table, format!("status {status}")))?,
        created_at_ms: created,
        expires_at_ms: expires,
    })
}

pub(super) fn requests_from_rows(rows: Vec<RequestRow>) -> StoreResult<Vec<VideochatRequest>> {
    rows.into_iter().map(request_from_row).collect()
}

pub(super) fn user_from_row(row: UserRow) -> StoreResult<UserProfile> {
    let (id, first_name, last_name, privacy_mode, avatar, avatar_3d, company_name, company_title) =
        row;
    let avatar_3d = match avatar_3d {
        Some(json) => {
            Some(serde_json::from_str::<Avatar3D>(&json).map_err(|e| corrupt("users", e))?)
        }
        None => None,
    };
    Ok(UserProfile {
        id: id.try_into().map_err(|e| corrupt("users", e))?,
        first_name,
        last_name,
        privacy_mode: i32::try_from(privacy_mode).map_err(|e| corrupt("users", e))?,
        avatar,
        avatar_3d,
        company_name,
        company_title,
    })
}

pub(super) fn avatar_3d_json(user: &UserProfile) -> StoreResult<Option<String>> {
    user.avatar_3d
        .as_ref()
        .filter(|a| !a.is_empty())
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| corrupt("users", e))
}

pub(super) fn participant_from_row(
    videochat_id: &VideochatId,
    user_id: &UserId,
    uid: i64,
    permissions: i64,
) -> StoreResult<Participant> {
    Ok(Participant {
        videochat_id: videochat_id.clone(),
        user_id: user_id.clone(),
        uid: u32::try_from(uid).map_err(|e| corrupt("participants", e))?,
        permissions: Permissions::from_bits(permissions),
    })
}

pub(super) fn videochat_from_row(
    row: (String, String, String, String, String, i64, Option<i64>),
) -> StoreResult<crate::domain::Videochat> {
    let (id, mode, engine, room, shared_secret, created_at_ms, ended_at_ms) = row;
    Ok(crate::domain::Videochat {
        id: id.try_into().map_err(|e| corrupt("videochats", e))?,
        mode: VideochatMode::parse(&mode).ok_or_else(|| corrupt("videochats", &mode))?,
        engine: engine.parse().map_err(|e| corrupt("videochats", e))?,
        room,
        shared_secret,
        created_at_ms,
        ended_at_ms,
    })
}

/// A pending ring of the user's own, with its target's profile (see [`outgoing_from_row`]).
pub(super) type OutgoingRow = (
    String,
    Option<String>,
    i64,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    String,
    String,
);

pub(super) fn outgoing_from_row(row: OutgoingRow) -> StoreResult<super::OutgoingRing> {
    let (
        id,
        videochat,
        expires_at_ms,
        target,
        first,
        last,
        privacy,
        avatar,
        avatar_3d,
        company,
        title,
    ) = row;
    let table = "videochat_requests";
    Ok(super::OutgoingRing {
        request_id: id.try_into().map_err(|e| corrupt(table, e))?,
        target: user_from_row((
            target, first, last, privacy, avatar, avatar_3d, company, title,
        ))?,
        videochat_id: videochat.map(videochat_id).transpose()?,
        expires_at_ms,
    })
}

pub(super) fn videochat_id(id: String) -> StoreResult<VideochatId> {
    id.try_into().map_err(|e| corrupt("videochats", e))
}

pub(super) fn user_id(id: String) -> StoreResult<UserId> {
    id.try_into().map_err(|e| corrupt("users", e))
}
