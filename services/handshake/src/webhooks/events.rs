//! Which webhooks a decided change causes, and their bodies: a pure function of the
//! [`Change`] and the [`Facts`] it was decided on, so every payload is fixed when the change is
//! written (a retry sends the same bytes) and testable without a database.
//!
//! Every body is `{"type", "timestamp", "data"}` (Standard Webhooks' recommended shape), times
//! in Unix milliseconds like the rest of the API. Call-status events go to every
//! `VIDEOCHAT_WEBHOOK_URL` that the event filter lets through; `push.ring` and `push.cancel` go
//! to `VIDEOCHAT_PUSH_WEBHOOK_URL`.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::change::{Change, Facts};
use crate::domain::{
    RequestId, RequestKind, RequestStatus, UserId, UserProfile, VideochatId, VideochatRequest,
};
use crate::store::Outbound;
use crate::store::webhooks::{NewDelivery, devices_json};

/// A direct ring started.
pub const CALL_REQUESTED: &str = "call.requested";
/// An invite into a videochat started.
pub const CALL_INVITED: &str = "call.invited";
pub const CALL_ACCEPTED: &str = "call.accepted";
/// The target said no.
pub const CALL_DECLINED: &str = "call.declined";
/// The initiator withdrew the ring.
pub const CALL_CANCELLED: &str = "call.cancelled";
/// Nobody answered before the ring timed out.
pub const CALL_MISSED: &str = "call.missed";
/// The target pulled the initiator into the videochat it was in.
pub const CALL_MERGED: &str = "call.merged";
/// Every call-status event type (`VIDEOCHAT_WEBHOOK_EVENTS` picks among these).
pub const CALL_EVENTS: [&str; 7] = [
    CALL_REQUESTED,
    CALL_INVITED,
    CALL_ACCEPTED,
    CALL_DECLINED,
    CALL_CANCELLED,
    CALL_MISSED,
    CALL_MERGED,
];
/// Wake the target's devices: a ring is waiting for them.
pub const PUSH_RING: &str = "push.ring";
/// Stop ringing the target's devices: that ring ended.
pub const PUSH_CANCEL: &str = "push.cancel";

/// Where each kind of webhook goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    pub call_endpoints: Vec<String>,
    /// Only these call-status events; `None`: all.
    pub events: Option<BTreeSet<&'static str>>,
    pub push_endpoint: Option<String>,
}

impl Routes {
    fn wants(&self, event: &str) -> bool {
        !self.call_endpoints.is_empty() && self.events.as_ref().is_none_or(|e| e.contains(event))
    }

    /// A ring to a user with no live socket but a device may be handed to push.
    pub fn push_enabled(&self) -> bool {
        self.push_endpoint.is_some()
    }
}

/// The webhooks `change` causes, decided on `facts`, at `now_ms`.
pub fn outbound(routes: &Routes, change: &Change, facts: &Facts, now_ms: i64) -> Outbound {
    let mut out = Outbound::default();
    if let Some(finish) = &change.finish
        && let Some(ring) = facts.request.as_ref().filter(|r| r.id == finish.request)
        && let Some((event, reason)) = ended(finish.status)
    {
        if routes.wants(event) {
            let videochat = videochat_of(change, ring, facts);
            let data = CallData {
                reason: Some(reason),
                ended_at: Some(now_ms),
                ..CallData::new(ring, facts, videochat)
            };
            for endpoint in &routes.call_endpoints {
                out.deliveries
                    .push(delivery(endpoint, event, &data, now_ms));
            }
        }
        // Only a ring nobody's phone was woken for needs no cancel.
        if let Some(endpoint) = &routes.push_endpoint
            && let Some(devices) = &facts.request_pushed_to
        {
            let data = json!({
                "videochatRequestId": ring.id,
                "userId": ring.target,
                "reason": reason,
                "devices": devices_json(devices),
            });
            out.deliveries
                .push(delivery(endpoint, PUSH_CANCEL, &data, now_ms));
        }
    }
    if let Some(ring) = &change.new_request {
        let event = match ring.kind {
            RequestKind::Direct => CALL_REQUESTED,
            RequestKind::Invite => CALL_INVITED,
        };
        if routes.wants(event) {
            let data = CallData::new(ring, facts, ring.videochat_id.as_ref());
            for endpoint in &routes.call_endpoints {
                out.deliveries
                    .push(delivery(endpoint, event, &data, now_ms));
            }
        }
        if let Some(endpoint) = &routes.push_endpoint
            && !facts.target_available
            && !facts.target_devices.is_empty()
        {
            let mut data = Map::new();
            data.insert("videochatRequestId".into(), json!(ring.id));
            data.insert("kind".into(), json!(ring.kind.as_str()));
            if let Some(videochat) = &ring.videochat_id {
                data.insert("videochatId".into(), json!(videochat));
            }
            data.insert("userId".into(), json!(ring.target));
            data.insert(
                "caller".into(),
                user_simple(&facts.profile(&ring.initiator)),
            );
            data.insert("devices".into(), devices_json(&facts.target_devices));
            data.insert("expiresAt".into(), json!(ring.expires_at_ms));
            out.deliveries
                .push(delivery(endpoint, PUSH_RING, &data, now_ms));
            out.push_handoff = Some(facts.target_devices.clone());
        }
    }
    out
}

/// The call-status event and the reason word of a ring's end.
fn ended(status: RequestStatus) -> Option<(&'static str, &'static str)> {
    Some(match status {
        RequestStatus::Accepted => (CALL_ACCEPTED, "accepted"),
        RequestStatus::Declined => (CALL_DECLINED, "declined"),
        RequestStatus::Cancelled => (CALL_CANCELLED, "cancelled"),
        RequestStatus::Expired => (CALL_MISSED, "timeout"),
        RequestStatus::Merged => (CALL_MERGED, "merged"),
        RequestStatus::Pending => return None,
    })
}

/// The videochat a ring's end is about: the one an accepted direct ring created, the one an
/// invite was into, or the one a merge pulled the initiator into.
fn videochat_of<'a>(
    change: &'a Change,
    ring: &'a VideochatRequest,
    facts: &'a Facts,
) -> Option<&'a VideochatId> {
    change
        .new_videochat
        .as_ref()
        .map(|v| &v.id)
        .or(ring.videochat_id.as_ref())
        .or(change.new_participants.first().map(|p| &p.videochat_id))
        .or(facts.videochat.as_ref().map(|v| &v.id))
}

/// A call-status event's `data`, serialized straight from the ring and the facts: bodies are
/// built on the handshake's path, and an intermediate JSON tree cost as much as the rest of
/// building them (measured: `bench/profile.sh` with webhooks on).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CallData<'a> {
    videochat_request_id: &'a RequestId,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    videochat_id: Option<&'a VideochatId>,
    initiator: UserSimple<'a>,
    target: UserSimple<'a>,
    created_at: i64,
    expires_at: i64,
    /// Set when the ring ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ended_at: Option<i64>,
}

impl<'a> CallData<'a> {
    fn new(
        ring: &'a VideochatRequest,
        facts: &'a Facts,
        videochat: Option<&'a VideochatId>,
    ) -> Self {
        Self {
            videochat_request_id: &ring.id,
            kind: ring.kind.as_str(),
            videochat_id: videochat,
            initiator: UserSimple::of(facts, &ring.initiator),
            target: UserSimple::of(facts, &ring.target),
            created_at: ring.created_at_ms,
            expires_at: ring.expires_at_ms,
            reason: None,
            ended_at: None,
        }
    }
}

/// Every webhook's body: `{"type", "timestamp", "data"}`.
#[derive(Serialize)]
struct Body<'a, D> {
    #[serde(rename = "type")]
    event: &'static str,
    timestamp: i64,
    data: &'a D,
}

fn delivery(
    endpoint: &str,
    event: &'static str,
    data: &impl Serialize,
    now_ms: i64,
) -> NewDelivery {
    let body = Body {
        event,
        timestamp: now_ms,
        data,
    };
    NewDelivery {
        id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
        endpoint: endpoint.to_owned(),
        event_type: event,
        payload: serde_json::to_string(&body).expect("a webhook body serializes"),
        leased_until_ms: None,
    }
}

/// The API text's User Simple, as the WebSocket events show it (`avatar3D` omitted when empty).
struct UserSimple<'a>(Cow<'a, UserProfile>);

impl<'a> UserSimple<'a> {
    /// `id`'s profile as the facts know it (only the id if they do not).
    fn of(facts: &'a Facts, id: &UserId) -> Self {
        Self(
            facts
                .user(id)
                .map(Cow::Borrowed)
                .unwrap_or_else(|| Cow::Owned(UserProfile::bare(id.clone()))),
        )
    }
}

impl Serialize for UserSimple<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let user = &*self.0;
        let avatar_3d = user.avatar_3d.as_ref().filter(|a| !a.is_empty());
        let mut map = serializer.serialize_map(Some(7 + usize::from(avatar_3d.is_some())))?;
        map.serialize_entry("id", &user.id)?;
        map.serialize_entry("firstName", &user.first_name)?;
        map.serialize_entry("lastName", &user.last_name)?;
        map.serialize_entry("privacyMode", &user.privacy_mode)?;
        map.serialize_entry("avatar", &user.avatar)?;
        if let Some(avatar) = avatar_3d {
            map.serialize_entry("avatar3D", avatar)?;
        }
        map.serialize_entry("companyName", &user.company_name)?;
        map.serialize_entry("companyTitle", &user.company_title)?;
        map.end()
    }
}

/// The API text's User Simple as JSON (see [`UserSimple`]).
fn user_simple(user: &UserProfile) -> Value {
    serde_json::to_value(UserSimple(Cow::Borrowed(user))).expect("a profile serializes")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{PushDevice, PushPlatform, PushToken, RequestId, UserId};
    use crate::engine::{EngineKind, Engines};
    use crate::machine::{self, Context, Limits};

    fn id(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn routes() -> Routes {
        Routes {
            call_endpoints: vec!["http://a/h".into(), "http://b/h".into()],
            events: None,
            push_endpoint: Some("http://push/h".into()),
        }
    }

    fn facts(available: bool, devices: usize) -> Facts {
        let mut alice = UserProfile::bare(id("alice"));
        alice.first_name = "Alice".into();
        Facts {
            users: vec![alice, UserProfile::bare(id("bob"))],
            target_available: available,
            target_devices: (0..devices)
                .map(|i| PushDevice {
                    platform: PushPlatform::Apns,
                    token: PushToken::parse(format!("tok{i}")).unwrap(),
                    voip: true,
                })
                .collect(),
            ..Facts::default()
        }
    }

    fn decide_request(facts: &Facts) -> Result<machine::Decision, crate::HandshakeError> {
        let engines = Engines::from_config(&crate::engine::tests::config()).unwrap();
        let ctx = Context {
            engines: &engines,
            ring_timeout: Duration::from_secs(45),
            limits: Limits::default(),
            now_ms: 1_000,
        };
        machine::request(facts, &ctx, &id("alice"), &id("bob"), None)
    }

    fn body(d: &NewDelivery) -> Value {
        serde_json::from_str(&d.payload).unwrap()
    }

    #[test]
    fn a_new_ring_is_one_call_requested_per_endpoint_with_both_users() {
        let facts = facts(true, 0);
        let decision = decide_request(&facts).unwrap();
        let out = outbound(&routes(), &decision.change, &facts, 1_000);
        assert!(
            out.push_handoff.is_none(),
            "the target has a socket: no push"
        );
        let kinds: Vec<_> = out
            .deliveries
            .iter()
            .map(|d| (d.endpoint.as_str(), d.event_type))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("http://a/h", CALL_REQUESTED),
                ("http://b/h", CALL_REQUESTED)
            ]
        );
        assert_ne!(out.deliveries[0].id, out.deliveries[1].id);
        assert!(out.deliveries[0].id.starts_with("msg_"));
        let b = body(&out.deliveries[0]);
        assert_eq!(b["type"], CALL_REQUESTED);
        assert_eq!(b["timestamp"], 1_000);
        assert_eq!(b["data"]["initiator"]["firstName"], "Alice");
        assert_eq!(b["data"]["target"]["id"], "bob");
        assert_eq!(b["data"]["expiresAt"], 46_000);
        assert!(b["data"].get("videochatId").is_none());
    }

    #[test]
    fn an_offline_target_with_a_device_is_rung_through_push_only_when_push_is_configured() {
        let offline = facts(false, 2);
        let decision = decide_request(&offline).unwrap();
        let out = outbound(&routes(), &decision.change, &offline, 1_000);
        assert_eq!(out.push_handoff.as_ref(), Some(&offline.target_devices));
        let push = out
            .deliveries
            .iter()
            .find(|d| d.event_type == PUSH_RING)
            .unwrap();
        assert_eq!(push.endpoint, "http://push/h");
        let b = body(push);
        assert_eq!(b["data"]["devices"].as_array().unwrap().len(), 2);
        assert_eq!(b["data"]["devices"][0]["voip"], true);
        assert_eq!(b["data"]["caller"]["id"], "alice");
        assert_eq!(b["data"]["expiresAt"], 46_000);
        // No device: refused as before.
        assert_eq!(
            decide_request(&facts(false, 0))
                .map(|_| ())
                .unwrap_err()
                .code() as i32,
            10011
        );
    }

    #[test]
    fn a_ring_end_names_its_reason_and_cancels_the_devices_its_push_woke() {
        let mut facts = facts(true, 0);
        let ring = VideochatRequest {
            id: RequestId::parse("vcr_1").unwrap(),
            kind: RequestKind::Direct,
            initiator: id("alice"),
            target: id("bob"),
            videochat_id: None,
            engine: EngineKind::Livekit,
            status: RequestStatus::Pending,
            created_at_ms: 0,
            expires_at_ms: 900,
        };
        facts.request = Some(ring.clone());
        let engines = Engines::from_config(&crate::engine::tests::config()).unwrap();
        let ctx = Context {
            engines: &engines,
            ring_timeout: Duration::from_secs(45),
            limits: Limits::default(),
            now_ms: 1_000,
        };
        let expired = machine::expire(&ctx, &ring);
        // Not pushed: no cancel.
        let out = outbound(&routes(), &expired.change, &facts, 1_000);
        let kinds: Vec<_> = out.deliveries.iter().map(|d| d.event_type).collect();
        assert_eq!(kinds, vec![CALL_MISSED, CALL_MISSED]);
        assert_eq!(body(&out.deliveries[0])["data"]["reason"], "timeout");
        // Pushed: a cancel naming the devices the ring woke, exactly as push.ring listed them.
        facts.request_pushed_to = Some(self::facts(false, 2).target_devices);
        let out = outbound(&routes(), &expired.change, &facts, 1_000);
        let kinds: Vec<_> = out.deliveries.iter().map(|d| d.event_type).collect();
        assert_eq!(kinds, vec![CALL_MISSED, CALL_MISSED, PUSH_CANCEL]);
        let cancel = body(&out.deliveries[2]);
        assert_eq!(out.deliveries[2].endpoint, "http://push/h");
        assert_eq!(
            cancel,
            json!({
                "type": "push.cancel",
                "timestamp": 1_000,
                "data": {
                    "videochatRequestId": "vcr_1",
                    "userId": "bob",
                    "reason": "timeout",
                    "devices": [
                        {"platform": "apns", "token": "tok0", "voip": true},
                        {"platform": "apns", "token": "tok1", "voip": true},
                    ],
                },
            })
        );
        let rung = outbound(
            &routes(),
            &decide_request(&self::facts(false, 2)).unwrap().change,
            &self::facts(false, 2),
            1_000,
        );
        let ring_body = body(
            rung.deliveries
                .iter()
                .find(|d| d.event_type == PUSH_RING)
                .unwrap(),
        );
        assert_eq!(cancel["data"]["devices"], ring_body["data"]["devices"]);
        facts.request_pushed_to = None;
        // Accepted: the new videochat is named.
        facts.request.as_mut().unwrap().expires_at_ms = 10_000;
        let accepted = machine::accept(&facts, &ctx, &id("bob")).unwrap();
        let out = outbound(&routes(), &accepted.change, &facts, 1_000);
        let b = body(&out.deliveries[0]);
        assert_eq!(b["type"], CALL_ACCEPTED);
        assert_eq!(
            b["data"]["videochatId"],
            json!(accepted.change.new_videochat.as_ref().unwrap().id)
        );
    }

    #[test]
    fn a_call_body_is_exactly_the_documented_shape() {
        let facts = facts(true, 0);
        let decision = decide_request(&facts).unwrap();
        let out = outbound(&routes(), &decision.change, &facts, 1_000);
        let ring = decision.change.new_request.as_ref().unwrap();
        let bob = json!({
            "id": "bob", "firstName": "", "lastName": "", "privacyMode": 0, "avatar": "",
            "companyName": "", "companyTitle": "",
        });
        assert_eq!(
            body(&out.deliveries[0]),
            json!({
                "type": "call.requested",
                "timestamp": 1_000,
                "data": {
                    "videochatRequestId": ring.id,
                    "kind": "direct",
                    "initiator": {
                        "id": "alice", "firstName": "Alice", "lastName": "", "privacyMode": 0,
                        "avatar": "", "companyName": "", "companyTitle": "",
                    },
                    "target": bob,
                    "createdAt": 1_000,
                    "expiresAt": 46_000,
                },
            })
        );
    }

    #[test]
    fn the_event_filter_and_no_routes_mean_no_rows() {
        let facts = facts(true, 0);
        let decision = decide_request(&facts).unwrap();
        let mut only_missed = routes();
        only_missed.events = Some([CALL_MISSED].into_iter().collect());
        only_missed.push_endpoint = None;
        assert!(outbound(&only_missed, &decision.change, &facts, 1).is_empty());
        assert!(outbound(&Routes::default(), &decision.change, &facts, 1).is_empty());
    }
}
