//! The load queries: for each operation, one statement that reads every fact the decision needs.
//!
//! A statement is a `UNION ALL` of small lookups, each tagged with the fact it is (`'user'`,
//! `'request'`, …) over the same columns: a tag, seven texts, two integers and one blob. One
//! round trip instead of five to ten keeps the per-operation cost of the database low (on
//! Postgres every statement costs a network round trip and a trip through the executor); the
//! same SQL runs on both backends. [`facts_from_rows`] turns the tagged rows back into [`Facts`].

use crate::change::{Facts, IdempotencyRecord, RecordedOutcome};
use crate::domain::{
    IdempotencyKey, PushDevice, PushPlatform, PushToken, UserId, VideochatRequest,
};
use crate::machine::{Command, INVITE_WINDOW_MS, MAX_RING_PARTICIPANTS};

use super::rows::{participant_from_row, request_from_row, user_from_row, videochat_from_row};
use super::webhooks::decode_devices;
use super::{StoreError, StoreResult};

/// One tagged row: fact, texts a–g, integers n1–n2, blob.
pub(super) type FactRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<Vec<u8>>,
);

/// A bind parameter of a load query.
pub(super) enum Param {
    Text(String),
    Int(i64),
}

/// The first answer under (`$1` user, `$2` key).
macro_rules! idempotency_fact {
    () => {
        "SELECT 'idempotency', operation, error_message, NULL, NULL, NULL, NULL, NULL, \
         error_code, created_at_ms, reply FROM idempotency_records WHERE user_id = $1 AND key = $2"
    };
}

macro_rules! user_fact {
    () => {
        "SELECT 'user', id, first_name, last_name, avatar, avatar_3d, company_name, company_title, \
         privacy_mode, NULL, NULL FROM users"
    };
}

macro_rules! request_fact {
    () => {
        "SELECT 'request', id, kind, initiator_id, target_id, videochat_id, engine, status, \
         created_at_ms, expires_at_ms, push_devices FROM videochat_requests"
    };
}

macro_rules! videochat_fact {
    () => {
        "SELECT 'videochat', id, mode, engine, room, shared_secret, NULL, NULL, created_at_ms, \
         ended_at_ms, NULL FROM videochats"
    };
}

/// A participant row; `b` is `'left'` when they left the room.
macro_rules! member_fact {
    () => {
        "SELECT 'member', user_id, CASE WHEN left_at_ms IS NULL THEN NULL ELSE 'left' END, \
         NULL, NULL, NULL, NULL, NULL, uid, permissions, NULL FROM participants"
    };
}

/// How many are in the room now, and the highest `uid` ever given (those who left keep theirs).
macro_rules! count_fact {
    () => {
        "SELECT 'count', NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         SUM(CASE WHEN left_at_ms IS NULL THEN 1 ELSE 0 END), MAX(uid), NULL FROM participants"
    };
}

/// The user `$3` has a socket on a gateway whose lease is alive at `$5`.
macro_rules! available_fact {
    () => {
        "SELECT 'available', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, NULL, NULL \
         WHERE EXISTS (SELECT 1 FROM connections c JOIN gateways g ON g.id = c.gateway_id \
         WHERE c.user_id = $3 AND g.lease_expires_at_ms > $5)"
    };
}

/// How many rings `$1` has ringing at `$5` (the pending-rings limit).
macro_rules! outgoing_fact {
    () => {
        "SELECT 'outgoing', NULL, NULL, NULL, NULL, NULL, NULL, NULL, COUNT(*), NULL, NULL \
         FROM videochat_requests WHERE initiator_id = $1 AND status = 'pending' AND expires_at_ms > $5"
    };
}

/// The devices `$3` registered for push (the push hand-off, when `$3` has no live socket).
macro_rules! devices_fact {
    () => {
        "SELECT 'device', platform, token, NULL, NULL, NULL, NULL, NULL, voip, NULL, NULL \
         FROM push_devices WHERE user_id = $3"
    };
}

/// `$1` actor, `$2` key, `$3` target, `$4` pair key, `$5` now.
const REQUEST_DIRECT: &str = concat!(
    idempotency_fact!(),
    " UNION ALL ",
    user_fact!(),
    " WHERE id IN ($1, $3)",
    " UNION ALL ",
    request_fact!(),
    " WHERE pair_key = $4 AND kind = 'direct' AND status = 'pending'",
    " UNION ALL ",
    available_fact!(),
    " UNION ALL ",
    outgoing_fact!(),
    " UNION ALL ",
    devices_fact!(),
);

/// `$1` actor, `$2` key, `$3` target, `$4` videochat, `$5` now, `$6` how many participants,
/// `$7` since when invites count towards the invites-per-minute limit.
const INVITE: &str = concat!(
    idempotency_fact!(),
    " UNION ALL ",
    user_fact!(),
    " WHERE id IN ($1, $3)",
    " UNION ALL ",
    videochat_fact!(),
    " WHERE id = $4",
    " UNION ALL ",
    member_fact!(),
    " WHERE videochat_id = $4 AND user_id IN ($1, $3)",
    " UNION ALL ",
    "SELECT 'participant', p.user_id, u.first_name, u.last_name, u.avatar, u.avatar_3d, \
     u.company_name, u.company_title, u.privacy_mode, p.uid, NULL \
     FROM (SELECT user_id, uid FROM participants WHERE videochat_id = $4 AND left_at_ms IS NULL \
     ORDER BY uid LIMIT $6) p \
     LEFT JOIN users u ON u.id = p.user_id",
    " UNION ALL ",
    count_fact!(),
    " WHERE videochat_id = $4",
    " UNION ALL ",
    request_fact!(),
    " WHERE videochat_id = $4 AND target_id = $3 AND kind = 'invite' AND status = 'pending'",
    " UNION ALL ",
    available_fact!(),
    " UNION ALL ",
    outgoing_fact!(),
    " UNION ALL ",
    "SELECT 'invites', NULL, NULL, NULL, NULL, NULL, NULL, NULL, COUNT(*), NULL, NULL \
     FROM videochat_requests WHERE videochat_id = $4 AND kind = 'invite' AND created_at_ms > $7",
    " UNION ALL ",
    devices_fact!(),
);

/// `$1` actor, `$2` key, `$3` request.
const ACCEPT: &str = concat!(
    idempotency_fact!(),
    " UNION ALL ",
    request_fact!(),
    " WHERE id = $3",
    " UNION ALL ",
    user_fact!(),
    " WHERE id IN ($1, (SELECT initiator_id FROM videochat_requests WHERE id = $3))",
    " UNION ALL ",
    videochat_fact!(),
    " WHERE id = (SELECT videochat_id FROM videochat_requests WHERE id = $3)",
    " UNION ALL ",
    member_fact!(),
    " WHERE videochat_id = (SELECT videochat_id FROM videochat_requests WHERE id = $3) AND user_id = $1",
    " UNION ALL ",
    count_fact!(),
    " WHERE videochat_id = (SELECT videochat_id FROM videochat_requests WHERE id = $3)",
);

/// `$1` actor, `$2` key, `$3` request.
const DECLINE: &str = concat!(
    idempotency_fact!(),
    " UNION ALL ",
    request_fact!(),
    " WHERE id = $3",
    " UNION ALL ",
    user_fact!(),
    " WHERE id IN ((SELECT initiator_id FROM videochat_requests WHERE id = $3), \
     (SELECT target_id FROM videochat_requests WHERE id = $3))",
);

/// `$1` actor, `$2` key, `$3` request, `$4` videochat.
const MERGE: &str = concat!(
    idempotency_fact!(),
    " UNION ALL ",
    request_fact!(),
    " WHERE id = $3",
    " UNION ALL ",
    user_fact!(),
    " WHERE id IN ($1, (SELECT initiator_id FROM videochat_requests WHERE id = $3))",
    " UNION ALL ",
    videochat_fact!(),
    " WHERE id = $4",
    " UNION ALL ",
    member_fact!(),
    " WHERE videochat_id = $4 AND user_id IN ($1, (SELECT initiator_id FROM videochat_requests WHERE id = $3))",
    " UNION ALL ",
    count_fact!(),
    " WHERE videochat_id = $4",
);

/// `$1` owner.
pub(super) const OWNER: &str = concat!(user_fact!(), " WHERE id = $1");

/// The statement and its parameters that load the facts of `command`.
pub(super) fn query(
    actor: &UserId,
    key: &IdempotencyKey,
    command: &Command,
    now_ms: i64,
) -> (&'static str, Vec<Param>) {
    let mut params = vec![Param::Text(actor.to_string()), Param::Text(key.to_string())];
    let sql = match command {
        Command::RequestDirect { target, .. } => {
            params.push(Param::Text(target.to_string()));
            params.push(Param::Text(VideochatRequest::pair_key(actor, target)));
            params.push(Param::Int(now_ms));
            REQUEST_DIRECT
        }
        Command::Invite { target, videochat } => {
            params.push(Param::Text(target.to_string()));
            params.push(Param::Text(videochat.to_string()));
            params.push(Param::Int(now_ms));
            params.push(Param::Int(MAX_RING_PARTICIPANTS));
            params.push(Param::Int(now_ms - INVITE_WINDOW_MS));
            INVITE
        }
        Command::Accept { request } => {
            params.push(Param::Text(request.to_string()));
            ACCEPT
        }
        Command::Decline { request } => {
            params.push(Param::Text(request.to_string()));
            DECLINE
        }
        Command::Merge { videochat, request } => {
            params.push(Param::Text(request.to_string()));
            params.push(Param::Text(videochat.to_string()));
            MERGE
        }
    };
    (sql, params)
}

fn device_from_row(
    platform: Option<String>,
    token: Option<String>,
    voip: Option<i64>,
) -> StoreResult<PushDevice> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "push_devices",
        detail,
    };
    let platform = platform.unwrap_or_default();
    Ok(PushDevice {
        platform: PushPlatform::parse(&platform)
            .ok_or_else(|| corrupt(format!("unknown platform {platform:?}")))?,
        token: PushToken::parse(token.unwrap_or_default()).map_err(|e| corrupt(e.to_string()))?,
        voip: voip.unwrap_or_default() != 0,
    })
}

fn count(n: Option<i64>) -> u32 {
    u32::try_from(n.unwrap_or_default()).unwrap_or(u32::MAX)
}

/// Tagged rows back into facts. `actor` and `key` name the idempotency record, if one came.
pub(super) fn facts_from_rows(
    rows: Vec<FactRow>,
    actor: Option<(&UserId, &IdempotencyKey)>,
) -> StoreResult<Facts> {
    let mut facts = Facts::default();
    let mut members = Vec::new();
    let mut participants = Vec::new();
    for (fact, a, b, c, d, e, f, g, n1, n2, blob) in rows {
        match fact.as_str() {
            "idempotency" => {
                let Some((user, key)) = actor else { continue };
                facts.idempotency = Some(IdempotencyRecord {
                    user_id: user.clone(),
                    key: key.clone(),
                    operation: a.unwrap_or_default(),
                    outcome: match blob {
                        Some(reply) => RecordedOutcome::Reply(reply),
                        None => RecordedOutcome::Error {
                            code: n1.and_then(|c| i32::try_from(c).ok()).unwrap_or(1004),
                            message: b.unwrap_or_default(),
                        },
                    },
                    created_at_ms: n2.unwrap_or_default(),
                });
            }
            "user" => facts.users.push(user_from_row((
                a.unwrap_or_default(),
                b.unwrap_or_default(),
                c.unwrap_or_default(),
                n1.unwrap_or_default(),
                d.unwrap_or_default(),
                e,
                f.unwrap_or_default(),
                g.unwrap_or_default(),
            ))?),
            "participant" => participants.push((
                n2.unwrap_or_default(),
                user_from_row((
                    a.unwrap_or_default(),
                    b.unwrap_or_default(),
                    c.unwrap_or_default(),
                    n1.unwrap_or_default(),
                    d.unwrap_or_default(),
                    e,
                    f.unwrap_or_default(),
                    g.unwrap_or_default(),
                ))?,
            )),
            "request" => {
                // The devices its `push.ring` woke, if it was pushed: its end cancels them.
                facts.request_pushed_to = blob.as_deref().map(decode_devices).transpose()?;
                facts.request = Some(request_from_row((
                    a.unwrap_or_default(),
                    b.unwrap_or_default(),
                    c.unwrap_or_default(),
                    d.unwrap_or_default(),
                    e,
                    f.unwrap_or_default(),
                    g.unwrap_or_default(),
                    n1.unwrap_or_default(),
                    n2.unwrap_or_default(),
                ))?)
            }
            "videochat" => {
                facts.videochat = Some(videochat_from_row((
                    a.unwrap_or_default(),
                    b.unwrap_or_default(),
                    c.unwrap_or_default(),
                    d.unwrap_or_default(),
                    e.unwrap_or_default(),
                    n1.unwrap_or_default(),
                    n2,
                ))?)
            }
            "member" => members.push((a.unwrap_or_default(), b.is_some(), n1, n2)),
            "count" => {
                facts.participant_count = u32::try_from(n1.unwrap_or_default()).unwrap_or(u32::MAX);
                facts.max_uid = u32::try_from(n2.unwrap_or_default()).unwrap_or(u32::MAX);
            }
            "available" => facts.target_available = true,
            "outgoing" => facts.pending_outgoing = count(n1),
            "invites" => facts.recent_invites = count(n1),
            "device" => facts.target_devices.push(device_from_row(a, b, n1)?),
            other => {
                return Err(StoreError::Corrupt {
                    table: "facts",
                    detail: format!("unknown fact {other}"),
                });
            }
        }
    }
    participants.sort_by_key(|(uid, _)| *uid);
    facts.participants = participants.into_iter().map(|(_, user)| user).collect();
    if let Some(videochat) = &facts.videochat {
        for (user, left, uid, permissions) in members {
            let user = UserId::parse(user).map_err(|e| StoreError::Corrupt {
                table: "participants",
                detail: e.to_string(),
            })?;
            let participant = participant_from_row(
                &videochat.id,
                &user,
                uid.unwrap_or_default(),
                permissions.unwrap_or_default(),
            )?;
            if left {
                facts.former.push(participant);
            } else {
                facts.members.push(participant);
            }
        }
    }
    Ok(facts)
}
