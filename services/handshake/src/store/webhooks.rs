//! The store's side of webhooks out: the delivery outbox (`webhook_deliveries`) and the devices
//! users registered for push (`push_devices`).
//!
//! Delivery rows are inserted by [`super::Store::apply`], in the transaction of the change they
//! describe ([`Outbound`] rides along in [`super::Write`]); everything else about them — claiming
//! due rows, recording how an attempt went, listing and retrying failed ones — is here, used by
//! [`crate::webhooks::dispatcher`] and the admin RPCs. Both backends implement
//! [`WebhookStore`] (Postgres in `postgres/webhooks.rs`, SQLite in `sqlite/webhooks.rs`).

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult};
use crate::domain::{PushDevice, PushPlatform, PushToken, RequestId, UserId};

/// A webhook to send, written with the change that causes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    /// The Standard Webhooks message id (`msg_…`), the same on every retry.
    pub id: String,
    pub endpoint: String,
    pub event_type: &'static str,
    /// The body to sign and send (JSON).
    pub payload: String,
    /// Written already claimed until then, by the replica that will send it right after the
    /// commit (counted as attempted once); `None`: due at once, for any dispatcher to claim.
    pub leased_until_ms: Option<i64>,
}

/// What a write sends out besides its events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outbound {
    pub deliveries: Vec<NewDelivery>,
    /// The devices the change's new ring was handed to the push sender for (`push.ring`). They
    /// are recorded on the ring, so that its end sends them a `push.cancel`.
    pub push_handoff: Option<Vec<PushDevice>>,
}

impl Outbound {
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.push_handoff.is_none()
    }
}

/// A device as `push.ring` and `push.cancel` name it, and as a pushed ring keeps it
/// (`videochat_requests.push_devices`).
#[derive(Serialize, Deserialize)]
struct DeviceJson<'a> {
    #[serde(borrow)]
    platform: Cow<'a, str>,
    #[serde(borrow)]
    token: Cow<'a, str>,
    voip: bool,
}

/// `devices` as the push webhooks list them: `[{"platform", "token", "voip"}]`.
pub fn devices_json(devices: &[PushDevice]) -> serde_json::Value {
    let list: Vec<DeviceJson<'_>> = devices
        .iter()
        .map(|d| DeviceJson {
            platform: Cow::Borrowed(d.platform.as_str()),
            token: Cow::Borrowed(d.token.as_str()),
            voip: d.voip,
        })
        .collect();
    serde_json::to_value(list).expect("devices serialize")
}

/// The devices a pushed ring keeps, as stored.
pub(super) fn encode_devices(devices: &[PushDevice]) -> Vec<u8> {
    devices_json(devices).to_string().into_bytes()
}

/// The devices a pushed ring kept.
pub(super) fn decode_devices(bytes: &[u8]) -> StoreResult<Vec<PushDevice>> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "videochat_requests",
        detail,
    };
    let list: Vec<DeviceJson<'_>> =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("push_devices: {e}")))?;
    list.into_iter()
        .map(|d| {
            Ok(PushDevice {
                platform: PushPlatform::parse(&d.platform)
                    .ok_or_else(|| corrupt(format!("unknown platform {:?}", d.platform)))?,
                token: PushToken::parse(d.token).map_err(|e| corrupt(e.to_string()))?,
                voip: d.voip,
            })
        })
        .collect()
}

/// A delivery row as the dispatcher and the admin RPCs see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub endpoint: String,
    pub event_type: String,
    pub payload: String,
    pub created_at_ms: i64,
    /// Attempts made so far (the one just claimed included).
    pub attempts: u32,
    /// When an operator last retried it after it failed: its age counts from then.
    pub retried_at_ms: Option<i64>,
    pub last_error: Option<String>,
    /// The W3C traceparent of the request that caused it (empty: none): each attempt's span is
    /// a child of that request's.
    pub traceparent: String,
    /// The group it was written in, if its store writes a batch's deliveries as one row; `None`:
    /// a row of its own in `webhook_deliveries`.
    pub group: Option<GroupRef>,
}

impl Delivery {
    /// Since when the delivery counts its age against the give-up limit.
    pub fn age_base_ms(&self) -> i64 {
        self.retried_at_ms.unwrap_or(self.created_at_ms)
    }
}

/// The deliveries one write batch committed, kept as one row until every one of them has had
/// its first attempt (Postgres's `webhook_groups`, `postgres/webhooks.rs`).
///
/// Why: a row per delivery cost Postgres an insert into a table and two indexes inside the
/// handshake's write, a delete once delivered, and their vacuuming. Measured flat out on
/// Postgres (docs/benchmarks.md, *Webhooks as one row per write batch*): WAL per handshake
/// −15 %, Postgres CPU per handshake −1 to −6 %; handshakes/s within the noise. Each delivery
/// of the group carries it; the dispatcher ends the group once it has the outcome of all
/// `size` ([`WebhookStore::settle_groups`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRef {
    pub id: Arc<str>,
    /// How many deliveries the group holds.
    pub size: usize,
}

/// A group every delivery of which had its first attempt: its row goes, and the deliveries not
/// delivered become rows of their own (due again, or failed), in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEnd {
    pub id: Arc<str>,
    pub undelivered: Vec<(Delivery, Settle)>,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    /// The endpoint answered 2xx.
    Delivered,
    /// Try again at `next_attempt_at_ms`.
    Retry {
        next_attempt_at_ms: i64,
        error: String,
    },
    /// Too old to keep trying: an operator may retry it (`RetryDeliveries`).
    Failed { error: String },
}

/// Which failed deliveries to send again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetrySelection {
    Ids(Vec<String>),
    AllFailed,
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Claims up to `limit` pending deliveries due at `now_ms`: each is counted as attempted
    /// and not due again before `lease_until_ms`, so no other dispatcher (on any replica) takes
    /// it meanwhile. A dispatcher that dies mid-send leaves it to be sent after the lease.
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>>;

    /// Records how attempts at claimed deliveries ended (the delivered ones in one statement:
    /// under load most attempts succeed, and one write per delivery would cost as much as the
    /// handshake that caused it).
    async fn settle_deliveries(&self, settled: &[(String, Settle)], now_ms: i64)
    -> StoreResult<()>;

    /// Ends groups ([`GroupRef`]) whose deliveries all had their first attempt: deletes each
    /// group's row and writes its undelivered deliveries as rows of their own, settled as
    /// given, in one transaction. A delivery that already has a row (its group lapsed and was
    /// released meanwhile) keeps it.
    async fn settle_groups(&self, ended: &[GroupEnd], now_ms: i64) -> StoreResult<()>;

    /// Releases groups whose lease ran out (the replica that wrote them died, or fell behind):
    /// each becomes one pending row per delivery, due at once, for any dispatcher to claim.
    /// Returns how many deliveries were released.
    async fn release_lapsed_groups(&self, now_ms: i64) -> StoreResult<u64>;

    /// How many deliveries are pending (the queue depth gauge).
    async fn pending_deliveries(&self) -> StoreResult<u64>;

    /// Failed deliveries, oldest first.
    async fn failed_deliveries(&self, limit: i64) -> StoreResult<Vec<Delivery>>;

    /// Makes failed deliveries pending again, due at `now_ms`, with the same message id; returns
    /// how many.
    async fn retry_deliveries(&self, which: &RetrySelection, now_ms: i64) -> StoreResult<u64>;

    /// Deletes delivered rows delivered before `before_ms`.
    async fn prune_deliveries(&self, before_ms: i64) -> StoreResult<u64>;

    /// Registers (or updates) one of a user's devices for push.
    async fn register_push_device(
        &self,
        user: &UserId,
        device: &PushDevice,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// Forgets a device; false if the user had no device with that token.
    async fn unregister_push_device(&self, user: &UserId, token: &PushToken) -> StoreResult<bool>;

    /// The devices `request` was handed to push for, `None` if it was not pushed (the end of a
    /// ring read outside the load queries: a timeout, a room that finished).
    async fn pushed_devices(&self, request: &RequestId) -> StoreResult<Option<Vec<PushDevice>>>;
}

/// The devices `request` was handed to push for ([`WebhookStore::pushed_devices`]); the same
/// SQL on both backends.
pub(super) async fn pushed_devices_of<DB>(
    pool: &sqlx::Pool<DB>,
    request: &RequestId,
) -> StoreResult<Option<Vec<PushDevice>>>
where
    DB: sqlx::Database,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> (Option<Vec<u8>>,): sqlx::FromRow<'r, DB::Row>,
{
    let row: Option<(Option<Vec<u8>>,)> =
        sqlx::query_as("SELECT push_devices FROM videochat_requests WHERE id = $1")
            .bind(request.as_str())
            .fetch_optional(pool)
            .await?;
    row.and_then(|(devices,)| devices)
        .as_deref()
        .map(decode_devices)
        .transpose()
}

/// A delivery row: id, endpoint, event type, payload, created, attempts, retried, last error,
/// traceparent.
pub(super) type DeliveryRow = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    String,
);

pub(super) fn delivery_from_row(
    (
        id,
        endpoint,
        event_type,
        payload,
        created_at_ms,
        attempts,
        retried_at_ms,
        last_error,
        traceparent,
    ): DeliveryRow,
) -> Delivery {
    Delivery {
        id,
        endpoint,
        event_type,
        payload,
        created_at_ms,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        retried_at_ms,
        last_error,
        traceparent,
        group: None,
    }
}

/// The columns of [`DeliveryRow`], in order.
pub(super) const DELIVERY_COLUMNS: &str = "id, endpoint, event_type, payload, created_at_ms, attempts, retried_at_ms, last_error, traceparent";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushed_rings_devices_round_trip_and_a_corrupt_list_is_an_error() {
        let devices = vec![
            PushDevice {
                platform: PushPlatform::Apns,
                token: PushToken::parse("tok \"quoted\" \\ é").unwrap(),
                voip: true,
            },
            PushDevice {
                platform: PushPlatform::Webpush,
                token: PushToken::parse("https://push.example/abc").unwrap(),
                voip: false,
            },
        ];
        assert_eq!(decode_devices(&encode_devices(&devices)).unwrap(), devices);
        assert_eq!(decode_devices(b"[]").unwrap(), vec![]);
        for corrupt in [
            &b"not json"[..],
            br#"[{"platform": "sms", "token": "t", "voip": true}]"#,
            br#"[{"platform": "fcm", "token": "", "voip": true}]"#,
            br#"[{"platform": "fcm"}]"#,
        ] {
            assert!(
                matches!(
                    decode_devices(corrupt),
                    Err(StoreError::Corrupt {
                        table: "videochat_requests",
                        ..
                    })
                ),
                "{}",
                String::from_utf8_lossy(corrupt)
            );
        }
    }
}
