//! Call history: every ring, with its outcome, in both users' histories; pages; missed calls
//! counted since the user last listed and shown to a socket that connects. Each on SQLite and
//! Postgres, through the real gateway (and over gRPC for internal services).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use videochat_proto::v1 as pb;

const LIST: &str = "videochat:listCalls";

/// A short ring, so that a call can be missed within a test.
fn quick_rings(app: &mut videochat_handshake::HandshakeConfig) {
    app.ring_timeout_s = 0.6;
}

async fn list(client: &mut Client, data: Value) -> Value {
    ok(&client.request(LIST, data).await)
}

/// The entry for `ring` in a listing.
fn entry<'a>(page: &'a Value, ring: &Value) -> &'a Value {
    page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["videochatRequestId"] == *ring)
        .unwrap_or_else(|| panic!("{ring} not in {page}"))
}

/// Waits until the ring timed out for both sides.
async fn missed(caller: &mut Client, callee: &mut Client, ring: &Value) {
    for client in [caller, callee] {
        loop {
            // Earlier rings' ends may still be queued.
            let declined = client.event(DECLINED).await;
            if declined["data"]["videochatRequestId"] == *ring {
                assert_eq!(declined["data"]["reason"], "timeout");
                break;
            }
        }
    }
}

/// An accepted, a declined, a cancelled and a missed direct call, a merged one and an accepted
/// invite: each is in both users' histories, with the outcome, direction, other user and times
/// each side would expect.
async fn every_outcome_is_in_both_histories(backend: Backend) {
    let app = TestApp::spawn_with(backend, |_, h| quick_rings(h)).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;

    let accepted = ring(&mut alice, &mut bob).await;
    let (for_bob, _) = accept(&mut alice, &mut bob, &accepted).await;
    let videochat = for_bob["videochatId"].clone();

    let declined = ring(&mut alice, &mut bob).await;
    ok(&bob
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": declined }),
        )
        .await);

    let cancelled = ring(&mut alice, &mut bob).await;
    ok(&alice
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": cancelled }),
        )
        .await);

    let timed_out = ring(&mut alice, &mut bob).await;
    missed(&mut alice, &mut bob, &timed_out).await;

    // Carol calls bob, who pulls her into his videochat with alice.
    let merged = ring(&mut carol, &mut bob).await;
    ok(&bob
        .request(
            "videochat:mergeToVideochat",
            json!({ "videochatId": videochat, "videochatRequestId": merged }),
        )
        .await);

    // Bob (in the videochat) invites dave, who accepts.
    let mut dave = app.connect("dave").await;
    let invited = ok(&bob
        .request(
            "videochat:invite",
            json!({ "targetUser": "dave", "videochatId": videochat }),
        )
        .await)["videochatRequestId"]
        .clone();
    dave.event(REQUESTED).await;
    ok(&dave
        .request(
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": invited }),
        )
        .await);

    let alices = list(&mut alice, json!({})).await;
    let bobs = list(&mut bob, json!({ "limit": 100 })).await;
    assert_eq!(alices["calls"].as_array().unwrap().len(), 4, "{alices}");
    assert_eq!(bobs["calls"].as_array().unwrap().len(), 6, "{bobs}");
    assert!(alices.get("next").is_none(), "one page: {alices}");

    for (ring, outcome, reason) in [
        (&accepted, "accepted", None),
        (&declined, "declined", Some("declined")),
        (&cancelled, "cancelled", Some("cancelled")),
        (&timed_out, "missed", Some("timeout")),
    ] {
        for (page, direction, other) in [(&alices, "outgoing", "bob"), (&bobs, "incoming", "alice")]
        {
            let call = entry(page, ring);
            assert_eq!(call["outcome"], outcome, "{call}");
            assert_eq!(call["direction"], direction, "{call}");
            assert_eq!(call["kind"], "direct", "{call}");
            assert_eq!(call["user"]["id"], other, "{call}");
            assert_eq!(call["user"]["firstName"], other, "User Simple: {call}");
            assert_eq!(call.get("reason").and_then(Value::as_str), reason, "{call}");
            let requested = call["requestedAt"].as_i64().unwrap();
            assert!(requested > 1_700_000_000_000, "{call}");
            let answered = call.get("answeredAt").and_then(Value::as_i64);
            let ended = call.get("endedAt").and_then(Value::as_i64);
            match outcome {
                "accepted" | "declined" => assert!(answered.unwrap() >= requested, "{call}"),
                _ => assert_eq!(answered, None, "nobody answered: {call}"),
            }
            if outcome != "accepted" {
                assert!(ended.unwrap() >= requested, "the ring's end: {call}");
            }
            assert!(call.get("inRoomMs").is_none(), "no engine report: {call}");
        }
    }
    assert_eq!(entry(&alices, &accepted)["videochatId"], videochat);
    assert!(entry(&alices, &declined).get("videochatId").is_none());
    // A missed call took the ring's whole timeout.
    let call = entry(&bobs, &timed_out);
    let rang = call["endedAt"].as_i64().unwrap() - call["requestedAt"].as_i64().unwrap();
    assert!(rang >= 600, "{call}");

    let carols = list(&mut carol, json!({})).await;
    for (page, direction, other) in [(&bobs, "incoming", "carol"), (&carols, "outgoing", "bob")] {
        let call = entry(page, &merged);
        assert_eq!(call["outcome"], "merged", "{call}");
        assert_eq!(call["direction"], direction, "{call}");
        assert_eq!(call["user"]["id"], other, "{call}");
        assert_eq!(call["videochatId"], videochat, "merged into it: {call}");
        assert!(call["answeredAt"].as_i64().is_some(), "{call}");
    }
    let daves = list(&mut dave, json!({})).await;
    for (page, direction, other) in [(&bobs, "outgoing", "dave"), (&daves, "incoming", "bob")] {
        let call = entry(page, &invited);
        assert_eq!(call["outcome"], "accepted", "{call}");
        assert_eq!(call["kind"], "invite", "{call}");
        assert_eq!(call["direction"], direction, "{call}");
        assert_eq!(call["user"]["id"], other, "{call}");
        assert_eq!(call["videochatId"], videochat, "{call}");
    }
    // Newest first.
    let times: Vec<i64> = bobs["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["requestedAt"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    app.stop().await;
}

/// Pages of `limit` entries, newest first, each starting where `next` of the last said, with no
/// entry twice or left out; the last page has no `next`. Bad paging fields are 1002 and name the
/// field.
async fn history_comes_in_pages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut rings = Vec::new();
    for _ in 0..5 {
        let ring = ring(&mut alice, &mut bob).await;
        ok(&bob
            .request(
                "videochat:declineVideochatRequest",
                json!({ "videochatRequestId": ring }),
            )
            .await);
        rings.push(ring);
        // Distinct milliseconds, so that pages of 2 cut where this test expects.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut seen = Vec::new();
    let mut before: Option<i64> = None;
    let mut pages = 0;
    loop {
        let mut data = json!({ "limit": 2 });
        if let Some(before) = before {
            data["before"] = json!(before);
        }
        let page = list(&mut bob, data).await;
        let calls = page["calls"].as_array().unwrap();
        assert!(calls.len() <= 2, "{page}");
        seen.extend(calls.iter().map(|c| c["videochatRequestId"].clone()));
        pages += 1;
        match page.get("next").and_then(Value::as_i64) {
            Some(next) => {
                assert_eq!(calls.len(), 2, "only a full page points further: {page}");
                before = Some(next);
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    rings.reverse();
    assert_eq!(seen, rings, "every call once, newest first");
    assert_eq!(pages, 3);

    for (data, field) in [
        (json!({ "limit": 0 }), "data.limit"),
        (json!({ "limit": 101 }), "data.limit"),
        (json!({ "limit": "ten" }), "data.limit"),
        (json!({ "limit": 2.5 }), "data.limit"),
        (json!({ "before": -1 }), "data.before"),
        (json!({ "before": "yesterday" }), "data.before"),
    ] {
        let frame = bob.request(LIST, data.clone()).await;
        err(&frame, 1002);
        assert!(
            frame["error"]["message"].as_str().unwrap().contains(field),
            "{data} -> {frame}"
        );
    }
    app.stop().await;
}

/// Calls bob missed are counted until he lists his calls; a socket he opens meanwhile is told
/// (`videochat:missedCalls` with the newest of them); after he listed, no longer. Listing over
/// gRPC without acknowledging leaves the count alone.
async fn missed_calls_are_shown_on_connect_until_listed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |_, h| quick_rings(h)).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let first = ring(&mut alice, &mut bob).await;
    missed(&mut alice, &mut bob, &first).await;
    let second = ring(&mut alice, &mut bob).await;
    missed(&mut alice, &mut bob, &second).await;
    // A declined call is not a missed one.
    let declined = ring(&mut alice, &mut bob).await;
    ok(&bob
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": declined }),
        )
        .await);
    bob.close().await;

    let mut phone = app.connect("bob").await;
    let shown = phone.event(MISSED_CALLS).await;
    assert_eq!(shown["data"]["count"], 2, "{shown}");
    let latest = shown["data"]["latest"].as_array().unwrap();
    assert_eq!(latest.len(), 2, "{shown}");
    assert_eq!(latest[0]["videochatRequestId"], second, "newest first");
    assert_eq!(latest[0]["outcome"], "missed");
    assert_eq!(latest[0]["user"]["id"], "alice");
    assert!(
        shown["event"]["id"]
            .as_str()
            .unwrap()
            .starts_with("missed_"),
        "not a mailbox position: {shown}"
    );

    // Internal services may read without acknowledging.
    let mut grpc = app.handshake_client().await;
    let page = grpc
        .list_calls(pb::ListCallsRequest {
            user_id: "bob".into(),
            before: None,
            limit: Some(10),
            acknowledge: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.missed_count, 2);
    assert_eq!(page.calls.len(), 3);
    assert_eq!(page.calls[0].outcome, "declined");
    let bad = grpc
        .list_calls(pb::ListCallsRequest {
            user_id: "bob".into(),
            before: None,
            limit: Some(1000),
            acknowledge: false,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let page = list(&mut phone, json!({})).await;
    assert_eq!(page["missedCount"], 2, "{page}");
    // Listed: counted as seen.
    let page = list(&mut phone, json!({})).await;
    assert_eq!(page["missedCount"], 0, "{page}");
    let mut laptop = app.connect("bob").await;
    laptop
        .no_event(MISSED_CALLS, Duration::from_millis(400))
        .await;

    // A new missed call counts again.
    let third = ring(&mut alice, &mut laptop).await;
    missed(&mut alice, &mut laptop, &third).await;
    let mut tablet = app.connect("bob").await;
    let shown = tablet.event(MISSED_CALLS).await;
    assert_eq!(shown["data"]["count"], 1, "{shown}");
    assert_eq!(shown["data"]["latest"][0]["videochatRequestId"], third);
    app.stop().await;
}

/// History past the retention is forgotten (the sweep runs every few seconds).
async fn history_past_its_retention_is_forgotten(backend: Backend) {
    let app = TestApp::spawn_with(backend, |_, h| h.history_retention_s = 1).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let ring = ring(&mut alice, &mut bob).await;
    ok(&bob
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": ring }),
        )
        .await);
    let page = list(&mut alice, json!({})).await;
    assert_eq!(page["calls"].as_array().unwrap().len(), 1, "{page}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let page = list(&mut alice, json!({})).await;
        if page["calls"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never pruned: {page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    app.stop().await;
}

on_both_backends!(
    every_outcome_is_in_both_histories,
    history_comes_in_pages,
    missed_calls_are_shown_on_connect_until_listed,
    history_past_its_retention_is_forgotten,
);
