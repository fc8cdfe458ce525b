//! The handshake API end to end: real stack, real WebSockets, on SQLite and on Postgres.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const REQUEST: &str = "videochat:requestDirectVideochat";
const INVITE: &str = "videochat:invite";
const ACCEPT: &str = "videochat:acceptVideochatRequest";
const DECLINE: &str = "videochat:declineVideochatRequest";
const MERGE: &str = "videochat:mergeToVideochat";

on_both_backends!(
    direct_call_rings_every_socket_and_accept_hands_out_credentials,
    decline_by_target_and_cancel_by_initiator_reach_both_sides,
    operations_refuse_with_the_contract_codes,
    a_retried_event_id_gets_the_first_answer_and_changes_nothing,
    asking_again_returns_the_ring_under_way,
    glare_accepts_the_ring_coming_the_other_way,
    an_unanswered_ring_times_out,
    a_socket_that_connects_is_told_what_rings,
    merge_pulls_the_caller_into_the_current_videochat,
    invite_rings_with_participants_and_counter,
    concurrent_accepts_from_two_devices_let_exactly_one_win,
    a_user_whose_sockets_all_closed_is_unavailable,
    the_acceptor_hears_its_answer_before_the_event_it_caused,
);

fn rid(frame: &Value) -> String {
    ok(frame)["videochatRequestId"]
        .as_str()
        .unwrap_or_else(|| panic!("no videochatRequestId in {frame}"))
        .to_owned()
}

fn verify_livekit(token: &str) -> livekit_api::access_token::Claims {
    livekit_api::access_token::TokenVerifier::with_api_key("devkey", "secret")
        .verify(token)
        .expect("LiveKit's own verifier accepts the token")
}

/// Starts a direct call from `a` to `b` and accepts it; returns (request id, videochat id).
async fn call_and_accept(a: &mut Client, b: &mut Client) -> (String, String) {
    let id = ring(a, b).await;
    let (credentials, _) = accept(a, b, &id).await;
    b.event(ACCEPTED).await;
    (
        id.as_str().unwrap().to_owned(),
        credentials["videochatId"].as_str().unwrap().to_owned(),
    )
}

async fn direct_call_rings_every_socket_and_accept_hands_out_credentials(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob_phone = app.connect("bob").await;
    let mut bob_laptop = app.connect("bob").await;

    let response = alice.request(REQUEST, json!({ "targetUser": "bob" })).await;
    assert_eq!(response["type"], REQUEST);
    let request_id = rid(&response);

    for socket in [&mut bob_phone, &mut bob_laptop] {
        let ring = socket.event(REQUESTED).await;
        assert_eq!(ring["error"]["status"], false);
        assert!(
            ring["event"]["id"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
        let data = &ring["data"];
        assert_eq!(data["videochatRequestId"], request_id.as_str());
        assert_eq!(data["user"]["id"], "alice");
        assert_eq!(data["user"]["firstName"], "alice");
        assert_eq!(data["user"]["lastName"], "Tester");
        assert!(
            data["user"].get("avatar3D").is_none(),
            "empty avatar3D is omitted"
        );
        assert_eq!(data["participants"], json!([]));
        assert_eq!(data["counter"], 0);
        assert!(data["expiresAt"].as_i64().unwrap() > ring["event"]["date"].as_i64().unwrap());
    }

    let accepted = bob_phone
        .request(ACCEPT, json!({ "videochatRequestId": request_id }))
        .await;
    let bob_creds = ok(&accepted);
    assert_eq!(bob_creds["videochatMode"], "videochat");
    assert_eq!(bob_creds["videochatEngine"], "livekit");
    assert_eq!(bob_creds["videochatUrl"], "ws://localhost:7880");
    assert_eq!(bob_creds["identity"], "bob");
    assert_eq!(bob_creds["user"]["id"], "bob");
    assert_eq!(bob_creds["permissions"]["isOwner"], false);
    assert_eq!(bob_creds["permissions"]["isModerator"], false);
    assert_eq!(bob_creds["permissions"]["isParticipant"], true);
    assert_eq!(bob_creds["permissions"]["isPromoted"], true);
    assert_eq!(bob_creds["permissions"]["isPresenter"], false);
    let secret = bob_creds["sharedSecret"].as_str().unwrap();
    assert!(
        secret.len() >= 43,
        "32 bytes of entropy, base64url: {secret}"
    );
    let claims = verify_livekit(bob_creds["token"].as_str().unwrap());
    assert_eq!(claims.sub, "bob");
    assert_eq!(claims.video.room, bob_creds["room"].as_str().unwrap());
    assert!(claims.video.room_join);
    assert_eq!(claims.video.can_publish, Some(true));
    assert_eq!(claims.video.can_subscribe, Some(true));
    assert!(!bob_creds["token"].as_str().unwrap().contains(secret));

    let initiator = alice.event(DIRECT_ACCEPTED).await;
    let alice_creds = &initiator["data"];
    assert_eq!(alice_creds["videochatId"], bob_creds["videochatId"]);
    assert_eq!(alice_creds["room"], bob_creds["room"]);
    assert_eq!(alice_creds["sharedSecret"], bob_creds["sharedSecret"]);
    assert_eq!(alice_creds["videochatRequestId"], request_id.as_str());
    assert_eq!(alice_creds["identity"], "alice");
    assert_ne!(alice_creds["uid"], bob_creds["uid"]);
    assert_eq!(alice_creds["permissions"]["isOwner"], true);
    assert_eq!(alice_creds["permissions"]["isModerator"], true);
    assert_eq!(alice_creds["permissions"]["isParticipant"], true);
    assert_eq!(alice_creds["permissions"]["isPromoted"], true);
    assert_eq!(
        verify_livekit(alice_creds["token"].as_str().unwrap()).sub,
        "alice"
    );

    for socket in [&mut bob_phone, &mut bob_laptop] {
        let event = socket.event(ACCEPTED).await;
        assert_eq!(event["data"]["videochatRequestId"], request_id.as_str());
    }
    alice.no_event(ACCEPTED, Duration::from_millis(200)).await;
    app.stop().await;
}

async fn decline_by_target_and_cancel_by_initiator_reach_both_sides(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut bob_tab = app.connect("bob").await;

    let first = rid(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await);
    bob.event(REQUESTED).await;
    let declined = bob
        .request(DECLINE, json!({ "videochatRequestId": first }))
        .await;
    ok(&declined);
    assert!(declined.get("data").is_none_or(Value::is_null));
    for socket in [&mut alice, &mut bob, &mut bob_tab] {
        let event = socket.event(DECLINED).await;
        assert_eq!(event["data"]["videochatRequestId"], first.as_str());
        assert_eq!(event["data"]["reason"], "declined");
    }
    refused(
        &mut bob,
        DECLINE,
        json!({ "videochatRequestId": first }),
        10014,
    )
    .await;
    refused(
        &mut bob,
        ACCEPT,
        json!({ "videochatRequestId": first }),
        10014,
    )
    .await;

    let second = rid(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await);
    assert_ne!(second, first, "a new ring after the first ended");
    bob.event(REQUESTED).await;
    ok(&alice
        .request(DECLINE, json!({ "videochatRequestId": second }))
        .await);
    for socket in [&mut alice, &mut bob, &mut bob_tab] {
        let event = socket.event(DECLINED).await;
        assert_eq!(event["data"]["videochatRequestId"], second.as_str());
        assert_eq!(event["data"]["reason"], "cancelled");
    }
    app.stop().await;
}

async fn operations_refuse_with_the_contract_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut users = [
        app.connect("alice").await,
        app.connect("bob").await,
        app.connect("carol").await,
    ];
    let [alice, bob, carol] = [0, 1, 2];

    // Nothing exists yet.
    let unknown = [
        (alice, REQUEST, json!({ "targetUser": "nobody" }), 1021),
        (alice, REQUEST, json!({ "targetUser": "alice" }), 10016),
        (
            alice,
            ACCEPT,
            json!({ "videochatRequestId": "vcr_missing" }),
            10012,
        ),
        (
            alice,
            DECLINE,
            json!({ "videochatRequestId": "vcr_missing" }),
            10012,
        ),
        (
            alice,
            MERGE,
            json!({ "videochatId": "vc_x", "videochatRequestId": "vcr_missing" }),
            10012,
        ),
        (
            alice,
            INVITE,
            json!({ "targetUser": "bob", "videochatId": "vc_missing" }),
            10015,
        ),
    ];
    for (who, kind, data, code) in unknown {
        refused(&mut users[who], kind, data, code).await;
    }

    // A ring from alice to bob: only bob may answer it, and merging needs a videochat he is in.
    let ring = rid(&users[alice]
        .request(REQUEST, json!({ "targetUser": "bob" }))
        .await);
    let answers = [
        (alice, ACCEPT, json!({ "videochatRequestId": ring }), 10013),
        (carol, ACCEPT, json!({ "videochatRequestId": ring }), 10013),
        (carol, DECLINE, json!({ "videochatRequestId": ring }), 10013),
        (
            alice,
            MERGE,
            json!({ "videochatId": "vc_x", "videochatRequestId": ring }),
            10013,
        ),
        (
            bob,
            MERGE,
            json!({ "videochatId": "vc_nope", "videochatRequestId": ring }),
            10015,
        ),
    ];
    for (who, kind, data, code) in answers {
        refused(&mut users[who], kind, data, code).await;
    }
    let accepted = users[bob]
        .request(ACCEPT, json!({ "videochatRequestId": ring }))
        .await;
    let videochat = ok(&accepted)["videochatId"].as_str().unwrap().to_owned();
    refused(
        &mut users[bob],
        ACCEPT,
        json!({ "videochatRequestId": ring }),
        10014,
    )
    .await;

    // Inviting: only participants may, not themselves, not someone already in, not a stranger.
    let invites = [
        (carol, "alice", 10015),
        (alice, "alice", 10016),
        (alice, "bob", 10016),
        (alice, "ghost", 1021),
    ];
    for (who, target, code) in invites {
        let data = json!({ "targetUser": target, "videochatId": videochat });
        refused(&mut users[who], INVITE, data, code).await;
    }
    // An invite ring cannot be merged.
    let invite = rid(&users[alice]
        .request(
            INVITE,
            json!({ "targetUser": "carol", "videochatId": videochat }),
        )
        .await);
    let data = json!({ "videochatId": videochat, "videochatRequestId": invite });
    refused(&mut users[carol], MERGE, data, 10013).await;
    app.stop().await;
}

async fn a_retried_event_id_gets_the_first_answer_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut bob_tab = app.connect("bob").await;

    let first = alice
        .request_with_id(REQUEST, json!({ "targetUser": "bob" }), "call-1")
        .await;
    let again = alice
        .request_with_id(REQUEST, json!({ "targetUser": "bob" }), "call-1")
        .await;
    assert_eq!(first["data"], again["data"]);
    let ring = rid(&first);
    bob.event(REQUESTED).await;
    bob.no_event(REQUESTED, Duration::from_millis(300)).await;

    // The same key from another socket of the same user is the same request.
    let accept = bob
        .request_with_id(ACCEPT, json!({ "videochatRequestId": ring }), "ans-1")
        .await;
    let retry = bob_tab
        .request_with_id(ACCEPT, json!({ "videochatRequestId": ring }), "ans-1")
        .await;
    assert_eq!(ok(&accept), ok(&retry), "same credentials, not 10014");
    alice.event(DIRECT_ACCEPTED).await;
    alice
        .no_event(DIRECT_ACCEPTED, Duration::from_millis(300))
        .await;
    bob.event(ACCEPTED).await;
    bob.no_event(ACCEPTED, Duration::from_millis(300)).await;

    // Refusals are replayed too; and a key is the caller's own, not everyone's.
    let refused = alice
        .request_with_id(REQUEST, json!({ "targetUser": "nobody" }), "k")
        .await;
    err(&refused, 1021);
    assert_eq!(
        alice
            .request_with_id(REQUEST, json!({ "targetUser": "nobody" }), "k")
            .await["error"],
        refused["error"]
    );
    err(
        &bob.request_with_id(ACCEPT, json!({ "videochatRequestId": "vcr_missing" }), "k")
            .await,
        10012,
    );

    // A key reused for another operation is a client bug: 1002, nothing done.
    let reused = alice
        .request_with_id(DECLINE, json!({ "videochatRequestId": ring }), "call-1")
        .await;
    err(&reused, 1002);
    app.stop().await;
}

async fn asking_again_returns_the_ring_under_way(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let first = rid(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await);
    let second = rid(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await);
    assert_eq!(first, second);
    bob.event(REQUESTED).await;
    bob.no_event(REQUESTED, Duration::from_millis(300)).await;
    app.stop().await;
}

async fn glare_accepts_the_ring_coming_the_other_way(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let ring = rid(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await);
    bob.event(REQUESTED).await;

    let answer = bob.request(REQUEST, json!({ "targetUser": "alice" })).await;
    assert_eq!(rid(&answer), ring, "bob's request accepts alice's ring");
    let for_alice = alice.event(DIRECT_ACCEPTED).await;
    let for_bob = bob.event(DIRECT_ACCEPTED).await;
    assert_eq!(
        for_alice["data"]["videochatId"],
        for_bob["data"]["videochatId"]
    );
    assert_eq!(for_alice["data"]["identity"], "alice");
    assert_eq!(for_bob["data"]["identity"], "bob");
    assert_eq!(for_alice["data"]["permissions"]["isOwner"], true);
    verify_livekit(for_bob["data"]["token"].as_str().unwrap());
    alice.no_event(REQUESTED, Duration::from_millis(300)).await;
    app.stop().await;
}

async fn an_unanswered_ring_times_out(backend: Backend) {
    let app = TestApp::spawn_with(backend, |_, handshake| handshake.ring_timeout_s = 1.0).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let ring = rid(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await);
    let requested = bob.event(REQUESTED).await;
    let expires_at = requested["data"]["expiresAt"].as_i64().unwrap();
    for socket in [&mut alice, &mut bob] {
        let event = socket.event(DECLINED).await;
        assert_eq!(event["data"]["videochatRequestId"], ring.as_str());
        assert_eq!(event["data"]["reason"], "timeout");
        assert!(event["event"]["date"].as_i64().unwrap() >= expires_at);
    }
    refused(
        &mut bob,
        ACCEPT,
        json!({ "videochatRequestId": ring }),
        10014,
    )
    .await;
    // A new call may follow at once.
    let next = rid(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await);
    assert_ne!(next, ring);
    app.stop().await;
}

async fn a_socket_that_connects_is_told_what_rings(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let ring = rid(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await);
    bob.event(REQUESTED).await;

    let mut bob_again = app.connect("bob").await;
    let replay = bob_again.event(REQUESTED).await;
    assert_eq!(replay["data"]["videochatRequestId"], ring.as_str());
    assert_eq!(replay["data"]["user"]["id"], "alice");
    assert!(replay["data"]["expiresAt"].as_i64().is_some());
    bob_again
        .no_event(REQUESTED, Duration::from_millis(300))
        .await;

    // Once answered, it is not replayed any more.
    ok(&bob
        .request(DECLINE, json!({ "videochatRequestId": ring }))
        .await);
    let mut bob_later = app.connect("bob").await;
    bob_later
        .no_event(REQUESTED, Duration::from_millis(300))
        .await;
    app.stop().await;
}

async fn merge_pulls_the_caller_into_the_current_videochat(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;
    let (_, videochat) = call_and_accept(&mut alice, &mut bob).await;

    // Carol calls bob, who is in a videochat with alice: it still rings.
    let ring = rid(&carol.request(REQUEST, json!({ "targetUser": "bob" })).await);
    bob.event(REQUESTED).await;
    let merged = bob
        .request(
            MERGE,
            json!({ "videochatId": videochat, "videochatRequestId": ring }),
        )
        .await;
    ok(&merged);
    let joined = carol.event(DIRECT_ACCEPTED).await;
    assert_eq!(joined["data"]["videochatId"], videochat.as_str());
    assert_eq!(joined["data"]["identity"], "carol");
    assert_eq!(joined["data"]["permissions"]["isPromoted"], true);
    assert_eq!(joined["data"]["permissions"]["isOwner"], false);
    let claims = verify_livekit(joined["data"]["token"].as_str().unwrap());
    assert_eq!(claims.video.room, joined["data"]["room"].as_str().unwrap());
    let accepted = bob.event(ACCEPTED).await;
    assert_eq!(accepted["data"]["videochatRequestId"], ring.as_str());
    refused(
        &mut bob,
        ACCEPT,
        json!({ "videochatRequestId": ring }),
        10014,
    )
    .await;

    // Carol is now a participant: she may invite.
    let mut dave = app.connect("dave").await;
    rid(&carol
        .request(
            INVITE,
            json!({ "targetUser": "dave", "videochatId": videochat }),
        )
        .await);
    let ring = dave.event(REQUESTED).await;
    assert_eq!(ring["data"]["counter"], 3);
    app.stop().await;
}

async fn invite_rings_with_participants_and_counter(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;
    let (_, videochat) = call_and_accept(&mut alice, &mut bob).await;

    let invite = rid(&alice
        .request(
            INVITE,
            json!({ "targetUser": "carol", "videochatId": videochat }),
        )
        .await);
    let again = rid(&bob
        .request(
            INVITE,
            json!({ "targetUser": "carol", "videochatId": videochat }),
        )
        .await);
    assert_eq!(invite, again, "one pending invite per invitee");
    let ring = carol.event(REQUESTED).await;
    let data = &ring["data"];
    assert_eq!(data["videochatRequestId"], invite.as_str());
    assert_eq!(data["user"]["id"], "alice");
    assert_eq!(data["counter"], 2);
    assert_eq!(data["videochatId"], videochat.as_str());
    let ids: Vec<&str> = data["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice", "bob"]);

    let creds = ok(&carol
        .request(ACCEPT, json!({ "videochatRequestId": invite }))
        .await);
    assert_eq!(creds["videochatId"], videochat.as_str());
    assert_eq!(creds["identity"], "carol");
    assert_eq!(
        creds["permissions"]["isPromoted"], true,
        "invitee into a plain videochat speaks"
    );
    assert_eq!(creds["uid"], 3);
    carol.event(ACCEPTED).await;
    alice
        .no_event(DIRECT_ACCEPTED, Duration::from_millis(300))
        .await;

    // Declining an invite tells inviter and invitee.
    let mut dave = app.connect("dave").await;
    let second = rid(&bob
        .request(
            INVITE,
            json!({ "targetUser": "dave", "videochatId": videochat }),
        )
        .await);
    assert_eq!(dave.event(REQUESTED).await["data"]["counter"], 3);
    ok(&dave
        .request(DECLINE, json!({ "videochatRequestId": second }))
        .await);
    assert_eq!(bob.event(DECLINED).await["data"]["reason"], "declined");
    assert_eq!(
        dave.event(DECLINED).await["data"]["videochatRequestId"],
        second.as_str()
    );
    app.stop().await;
}

async fn concurrent_accepts_from_two_devices_let_exactly_one_win(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut phone = app.connect("bob").await;
    let mut laptop = app.connect("bob").await;
    let ring = rid(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await);
    let (a, b) = tokio::join!(
        phone.request(ACCEPT, json!({ "videochatRequestId": ring })),
        laptop.request(ACCEPT, json!({ "videochatRequestId": ring })),
    );
    let codes = [
        a["error"]["code"].as_i64().unwrap(),
        b["error"]["code"].as_i64().unwrap(),
    ];
    let mut sorted = codes;
    sorted.sort();
    assert_eq!(sorted, [0, 10014], "exactly one accept wins: {a} / {b}");
    alice.event(DIRECT_ACCEPTED).await;
    alice
        .no_event(DIRECT_ACCEPTED, Duration::from_millis(300))
        .await;
    app.stop().await;
}

async fn a_user_whose_sockets_all_closed_is_unavailable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let bob = app.connect("bob").await;
    let bob_tab = app.connect("bob").await;
    bob.close().await;
    // One socket left: still available.
    let ring = rid(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await);
    ok(&alice
        .request(DECLINE, json!({ "videochatRequestId": ring }))
        .await);
    // Presence is dropped before the server acknowledges the close: no race to wait out.
    bob_tab.close().await;
    refused(&mut alice, REQUEST, json!({ "targetUser": "bob" }), 10011).await;
    app.stop().await;
}

/// The acceptor's own socket gets the accept's answer first and the `videochatAccepted` the
/// accept caused right after it (the gateway writes both at once, answer first).
async fn the_acceptor_hears_its_answer_before_the_event_it_caused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    for _ in 0..5 {
        let id = ring(&mut alice, &mut bob).await;
        let response = bob
            .request(
                "videochat:acceptVideochatRequest",
                json!({ "videochatRequestId": id }),
            )
            .await;
        ok(&response);
        assert!(
            !bob.has_queued(ACCEPTED),
            "videochatAccepted arrived before the answer to the accept"
        );
        assert_eq!(bob.event(ACCEPTED).await["data"]["videochatRequestId"], id);
        alice.event(DIRECT_ACCEPTED).await;
    }
    app.stop().await;
}
