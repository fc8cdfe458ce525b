//! Nothing lost from a user's point of view: events due while a user had no socket arrive on
//! the next one; a client that says which event it saw last gets exactly what came after; past
//! the kept history it gets a snapshot to resynchronise from. Each on SQLite and Postgres.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Event ids of `kind` among `frames`.
fn of_kind<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

/// Alice calls bob, and hangs up before he answers; he accepts while she has no socket. Her next
/// socket is told, once; a second socket opened after it is not told again.
async fn an_event_due_while_the_user_was_away_arrives_on_her_next_socket(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let ring = ring(&mut alice, &mut bob).await;
    alice.close().await;
    let for_bob = ok(&bob
        .request(
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": ring }),
        )
        .await);

    let mut alice = app.connect("alice").await;
    let accepted = alice.event(DIRECT_ACCEPTED).await;
    assert_eq!(accepted["data"]["videochatRequestId"], ring);
    assert_eq!(accepted["data"]["videochatId"], for_bob["videochatId"]);
    assert_eq!(accepted["data"]["identity"], "alice");
    let position: u64 = accepted["event"]["id"].as_str().unwrap().parse().unwrap();
    assert!(position >= 1);
    // Once on this socket, and not again on a later one (it was seen).
    let later = alice.drain(Duration::from_millis(300)).await;
    assert!(of_kind(&later, DIRECT_ACCEPTED).is_empty(), "{later:?}");
    let mut tablet = app.connect("alice").await;
    let on_tablet = tablet.drain(Duration::from_millis(300)).await;
    assert!(
        of_kind(&on_tablet, DIRECT_ACCEPTED).is_empty(),
        "{on_tablet:?}"
    );
    app.stop().await;
}

/// A client that reconnects with `lastEventId` gets every event after it, in order, with the
/// ids it would have seen live, and nothing before it.
async fn a_client_resuming_from_its_last_event_gets_exactly_what_followed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut bob = app.connect("bob").await;
    let mut callers = Vec::new();
    let mut live = Vec::new();
    for i in 0..3 {
        let mut caller = app.connect(&format!("caller-{i}")).await;
        let ring = ring(&mut caller, &mut bob).await;
        ok(&caller
            .request(
                "videochat:declineVideochatRequest",
                json!({ "videochatRequestId": ring }),
            )
            .await);
        live.push(bob.event(DECLINED).await);
        callers.push(caller);
    }
    let frames = bob.drain(Duration::from_millis(200)).await;
    assert!(frames.is_empty(), "{frames:?}");
    bob.close().await;
    // Bob saw everything up to the first decline; he resumes from there.
    let resume_from = live[0]["event"]["id"].as_str().unwrap().to_owned();
    let url = format!("{}?lastEventId={resume_from}", app.ws_url());
    let mut bob = Client::connect(&url, "bob", &TestApp::token("bob")).await;
    let resumed = bob.drain(Duration::from_millis(500)).await;
    let ids: Vec<u64> = resumed
        .iter()
        .map(|f| f["event"]["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let from: u64 = resume_from.parse().unwrap();
    let last: u64 = live[2]["event"]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(ids, ((from + 1)..=last).collect::<Vec<_>>(), "{resumed:?}");
    // The two later rings and their ends, as they were sent live.
    assert_eq!(of_kind(&resumed, REQUESTED).len(), 2);
    assert_eq!(of_kind(&resumed, DECLINED).len(), 2);
    assert_eq!(
        resumed.last().unwrap()["event"]["id"],
        live[2]["event"]["id"]
    );
    assert_eq!(resumed.last().unwrap()["data"]["reason"], "cancelled");
    app.stop().await;
}

/// A position the server never reached (or history no longer kept) gets a snapshot: the rings
/// ringing for the user, the user's own pending rings, and the videochats the user is in.
async fn a_client_past_the_kept_history_is_told_to_resynchronise(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;
    // Alice and bob are in a videochat; carol rings alice; alice rings dave (who is online).
    let first = ring(&mut alice, &mut bob).await;
    let (for_bob, _) = accept(&mut alice, &mut bob, &first).await;
    let incoming = ring(&mut carol, &mut alice).await;
    let mut dave = app.connect("dave").await;
    let outgoing = ring(&mut alice, &mut dave).await;
    alice.close().await;

    let url = format!("{}?lastEventId=999999", app.ws_url());
    let mut alice = Client::connect(&url, "alice", &TestApp::token("alice")).await;
    let resync = alice.event(RESYNC).await;
    let data = &resync["data"];
    assert_eq!(data["reason"], "history_unavailable");
    assert!(
        resync["event"]["id"]
            .as_str()
            .unwrap()
            .starts_with("resync_")
    );
    assert_eq!(data["incoming"].as_array().unwrap().len(), 1);
    assert_eq!(data["incoming"][0]["videochatRequestId"], incoming);
    assert_eq!(data["incoming"][0]["user"]["id"], "carol");
    assert!(data["incoming"][0]["expiresAt"].as_i64().unwrap() > 0);
    assert_eq!(data["outgoing"].as_array().unwrap().len(), 1);
    assert_eq!(data["outgoing"][0]["videochatRequestId"], outgoing);
    assert_eq!(data["outgoing"][0]["targetUser"]["id"], "dave");
    assert!(data["outgoing"][0]["expiresAt"].as_i64().unwrap() > 0);
    assert_eq!(data["videochats"].as_array().unwrap().len(), 1);
    assert_eq!(data["videochats"][0]["videochatId"], for_bob["videochatId"]);
    assert_eq!(data["videochats"][0]["counter"], 2);
    // Nothing else is replayed with a snapshot, and the socket works on.
    let rest = alice.drain(Duration::from_millis(300)).await;
    assert!(rest.is_empty(), "{rest:?}");
    ok(&alice
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": incoming }),
        )
        .await);
    app.stop().await;
}

/// History older than the retention is pruned; a client resuming from before it is resynchronised.
async fn pruned_history_resynchronises(backend: Backend) {
    let app = TestApp::spawn_with(backend, |_, handshake| handshake.outbox_retention_s = 1).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let ring = ring(&mut alice, &mut bob).await;
    ok(&alice
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": ring }),
        )
        .await);
    bob.event(DECLINED).await;
    bob.close().await;
    // The sweep runs every 5 s and prunes events older than a second.
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let url = format!("{}?lastEventId=0", app.ws_url());
    let mut bob = Client::connect(&url, "bob", &TestApp::token("bob")).await;
    let resync = bob.event(RESYNC).await;
    assert_eq!(resync["data"]["incoming"].as_array().unwrap().len(), 0);
    app.stop().await;
}

/// `lastEventId` must be a position: anything else refuses the upgrade with 400 and a reason.
async fn a_bad_last_event_id_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for bad in ["abc", "replay_0190", "-3", ""] {
        let url = format!(
            "{}?access_token={}&lastEventId={bad}",
            app.ws_url(),
            TestApp::token("bob")
        );
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{bad:?}");
                let body =
                    String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[])).into_owned();
                assert!(body.contains("lastEventId"), "{bad:?}: {body}");
            }
            other => panic!("{bad:?}: expected 400, got {other:?}"),
        }
    }
    // And the refused upgrades registered nothing: bob was never even seen.
    let mut alice = app.connect("alice").await;
    refused(
        &mut alice,
        "videochat:requestDirectVideochat",
        json!({ "targetUser": "bob" }),
        1021,
    )
    .await;
    app.stop().await;
}

on_both_backends!(
    an_event_due_while_the_user_was_away_arrives_on_her_next_socket,
    a_client_resuming_from_its_last_event_gets_exactly_what_followed,
    a_client_past_the_kept_history_is_told_to_resynchronise,
    pruned_history_resynchronises,
    a_bad_last_event_id_is_refused,
);
