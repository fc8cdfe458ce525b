//! Webhook groups on real Postgres (`webhook_groups`, see `GroupRef`): a write batch's deliveries
//! are one row, which ends in one write, leaves the undelivered ones as rows of their own, and is
//! released whole when its lease runs out.

use super::PostgresStore;
use crate::change::{Change, Finish};
use crate::domain::{RequestId, RequestStatus};
use crate::store::scratch::with_postgres;
use crate::store::webhooks::{GroupEnd, NewDelivery, Outbound, Settle, WebhookStore};
use crate::store::{Applied, Store, StoreError, Write};

const NOW: i64 = 1_000_000;
const LEASED_UNTIL: i64 = NOW + 15_000;

fn delivery(id: &str, leased_until_ms: Option<i64>) -> NewDelivery {
    NewDelivery {
        id: id.into(),
        endpoint: "http://receiver/calls".into(),
        event_type: "call.requested",
        payload: format!(r#"{{"id":"{id}"}}"#),
        leased_until_ms,
    }
}

/// Writes `deliveries` with `change` as the service does.
async fn write(
    store: &PostgresStore,
    change: &Change,
    deliveries: Vec<NewDelivery>,
) -> Result<Applied, StoreError> {
    let outbound = Outbound {
        deliveries,
        push_handoff: None,
    };
    store
        .apply(&Write {
            change,
            events: &[],
            record: None,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            now_ms: NOW,
            outbound: &outbound,
        })
        .await
}

async fn count(store: &PostgresStore, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

async fn groups(store: &PostgresStore) -> i64 {
    count(store, "SELECT COUNT(*) FROM webhook_groups").await
}

async fn rows(store: &PostgresStore) -> i64 {
    count(store, "SELECT COUNT(*) FROM webhook_deliveries").await
}

/// The usual life of a group: one row for the batch, no row per delivery, counted as pending,
/// not claimable by anyone while leased, gone in one write once all were delivered.
#[tokio::test]
async fn a_batchs_deliveries_are_one_row_that_goes_once_all_are_delivered() {
    with_postgres("vc_groups_test", |url| async move {
        let store = PostgresStore::connect(&url, 4, "test").await.unwrap();
        let applied = write(
            &store,
            &Change::default(),
            vec![
                delivery("msg_a", Some(LEASED_UNTIL)),
                delivery("msg_b", Some(LEASED_UNTIL)),
            ],
        )
        .await
        .unwrap();
        let group = applied.group.expect("written as a group");
        assert_eq!(group.size, 2);
        assert!(group.id.starts_with("grp_"), "{}", group.id);
        assert_eq!((groups(&store).await, rows(&store).await), (1, 0));
        let (ids, lease): (Vec<String>, i64) =
            sqlx::query_as("SELECT ids, leased_until_ms FROM webhook_groups")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(
            (ids, lease),
            (vec!["msg_a".into(), "msg_b".into()], LEASED_UNTIL)
        );
        assert_eq!(store.pending_deliveries().await.unwrap(), 2);

        // Leased to the replica that wrote it: nobody releases or claims it meanwhile.
        assert_eq!(store.release_lapsed_groups(NOW + 1).await.unwrap(), 0);
        let claimed = store.claim_deliveries(NOW + 1, NOW + 2, 10).await;
        assert!(claimed.unwrap().is_empty());

        store
            .settle_groups(
                &[GroupEnd {
                    id: group.id.clone(),
                    undelivered: Vec::new(),
                }],
                NOW + 5,
            )
            .await
            .unwrap();
        assert_eq!((groups(&store).await, rows(&store).await), (0, 0));
        assert_eq!(store.pending_deliveries().await.unwrap(), 0);
        // A write without webhooks makes no group.
        let applied = write(&store, &Change::default(), Vec::new()).await.unwrap();
        assert_eq!(applied.group, None);
        assert_eq!(groups(&store).await, 0);
    })
    .await;
}

/// A group whose deliveries were not all delivered ends with those as rows of their own, as
/// their attempt ended: one due again (and claimable then), one failed (and listed); the
/// delivered one leaves nothing.
#[tokio::test]
async fn an_ended_groups_undelivered_deliveries_become_rows_settled_as_their_attempt_ended() {
    with_postgres("vc_groups_test", |url| async move {
        let store = PostgresStore::connect(&url, 4, "test").await.unwrap();
        let ids = ["msg_retry", "msg_failed", "msg_done"];
        let applied = write(
            &store,
            &Change::default(),
            ids.iter()
                .map(|id| delivery(id, Some(LEASED_UNTIL)))
                .collect(),
        )
        .await
        .unwrap();
        let group = applied.group.unwrap();
        // What the dispatcher holds of each: the delivery as handed over after the commit.
        let handed = |id: &str| crate::store::webhooks::Delivery {
            id: id.into(),
            endpoint: "http://receiver/calls".into(),
            event_type: "call.requested".into(),
            payload: format!(r#"{{"id":"{id}"}}"#),
            created_at_ms: NOW,
            attempts: 1,
            retried_at_ms: None,
            last_error: None,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            group: Some(group.clone()),
        };
        let retry_at = NOW + 500;
        store
            .settle_groups(
                &[GroupEnd {
                    id: group.id.clone(),
                    undelivered: vec![
                        (
                            handed("msg_retry"),
                            Settle::Retry {
                                next_attempt_at_ms: retry_at,
                                error: "answered 500".into(),
                            },
                        ),
                        (
                            handed("msg_failed"),
                            Settle::Failed {
                                error: "answered 410".into(),
                            },
                        ),
                    ],
                }],
                NOW + 10,
            )
            .await
            .unwrap();
        assert_eq!((groups(&store).await, rows(&store).await), (0, 2));

        let failed = store.failed_deliveries(10).await.unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].id, "msg_failed");
        assert_eq!(failed[0].last_error.as_deref(), Some("answered 410"));
        assert_eq!(failed[0].group, None, "a row of its own");
        // Not due before its retry; then claimed with its attempt counted.
        assert!(
            store
                .claim_deliveries(retry_at - 1, NOW + 9_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let claimed = store
            .claim_deliveries(retry_at, NOW + 9_000, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let retried = &claimed[0];
        assert_eq!(retried.id, "msg_retry");
        assert_eq!(retried.attempts, 2);
        assert_eq!(retried.payload, r#"{"id":"msg_retry"}"#);
        assert_eq!(retried.created_at_ms, NOW);
        assert_eq!(retried.last_error.as_deref(), Some("answered 500"));
        assert!(retried.traceparent.starts_with("00-0af7651916cd43dd"));
    })
    .await;
}

/// A group whose lease ran out (its replica died before recording the attempts) is released
/// whole: every delivery a pending row with its own id, body and trace, claimable at once. If
/// the replica that wrote it ends it later after all, the released rows are kept as they are.
#[tokio::test]
async fn a_lapsed_group_is_released_as_rows_any_replica_can_claim() {
    with_postgres("vc_groups_test", |url| async move {
        let store = PostgresStore::connect(&url, 4, "test").await.unwrap();
        let lapsed = write(
            &store,
            &Change::default(),
            vec![
                delivery("msg_x", Some(NOW + 100)),
                delivery("msg_y", Some(NOW + 100)),
            ],
        )
        .await
        .unwrap()
        .group
        .unwrap();
        // Written unclaimed (no lease): due at once, as a group of its own.
        let unclaimed = write(&store, &Change::default(), vec![delivery("msg_z", None)])
            .await
            .unwrap()
            .group
            .unwrap();
        assert_ne!(lapsed.id, unclaimed.id);
        assert_eq!(store.release_lapsed_groups(NOW + 99).await.unwrap(), 1);
        assert_eq!(store.release_lapsed_groups(NOW + 100).await.unwrap(), 2);
        assert_eq!((groups(&store).await, rows(&store).await), (0, 3));
        assert_eq!(store.pending_deliveries().await.unwrap(), 3);

        let mut claimed = store
            .claim_deliveries(NOW + 100, NOW + 20_000, 10)
            .await
            .unwrap();
        claimed.sort_by(|a, b| a.id.cmp(&b.id));
        let ids: Vec<_> = claimed.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["msg_x", "msg_y", "msg_z"]);
        for d in &claimed {
            assert_eq!(d.payload, format!(r#"{{"id":"{}"}}"#, d.id));
            assert_eq!(d.endpoint, "http://receiver/calls");
            assert_eq!(d.event_type, "call.requested");
            assert_eq!(d.created_at_ms, NOW);
            assert_eq!(d.attempts, 2, "the lost attempt counts");
            assert!(d.traceparent.starts_with("00-0af7651916cd43dd"));
        }

        // The writing replica, late, ends the group with a failure: the released row stays.
        let late = crate::store::webhooks::Delivery {
            group: Some(lapsed.clone()),
            ..claimed[0].clone()
        };
        store
            .settle_groups(
                &[GroupEnd {
                    id: lapsed.id.clone(),
                    undelivered: vec![(
                        late,
                        Settle::Failed {
                            error: "late".into(),
                        },
                    )],
                }],
                NOW + 200,
            )
            .await
            .unwrap();
        assert_eq!(rows(&store).await, 3);
        assert!(store.failed_deliveries(10).await.unwrap().is_empty());
    })
    .await;
}

/// An operation whose guard fails writes no webhooks: nothing of it reaches the group table.
#[tokio::test]
async fn a_stale_operation_writes_no_group() {
    with_postgres("vc_groups_test", |url| async move {
        let store = PostgresStore::connect(&url, 4, "test").await.unwrap();
        let answered_meanwhile = Change {
            finish: Some(Finish {
                request: RequestId::parse("vcr_gone").unwrap(),
                status: RequestStatus::Accepted,
                ringing_at: None,
                videochat: None,
            }),
            ..Change::default()
        };
        let outcome = write(
            &store,
            &answered_meanwhile,
            vec![delivery("msg_stale", Some(LEASED_UNTIL))],
        )
        .await;
        assert!(matches!(outcome, Err(StoreError::Stale)), "{outcome:?}");
        assert_eq!((groups(&store).await, rows(&store).await), (0, 0));
    })
    .await;
}
