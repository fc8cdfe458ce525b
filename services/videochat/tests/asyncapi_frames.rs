//! docs/asyncapi.yaml checked against real frames: a handshake through the real stack that
//! sends every request type and draws every response, every event (each decline reason, a
//! replay at connect, glare), the push device frames, and the error responses a client can
//! provoke; each frame is
//! labelled with the message of the document it must be, and `docs/asyncapi/check-frames.mjs`
//! (the AsyncAPI parser + ajv) validates it strictly against that message's payload schema.

mod common;

use std::path::PathBuf;

use common::node::{npm_install, run_node};
use common::*;
use serde_json::{Value, json};

/// Frames, each with the id of the message in docs/asyncapi.yaml it must match.
#[derive(Default)]
struct Capture {
    frames: Vec<Value>,
}

impl Capture {
    fn record(&mut self, message: &str, frame: &Value) {
        self.frames
            .push(json!({ "message": message, "frame": frame }));
    }

    /// Sends a request through `client` exactly as `Client::request` does, recording the frame
    /// sent as `message` and the answer as `response_message` (or `errorResponse`).
    async fn request(
        &mut self,
        client: &mut Client,
        message: &str,
        response_message: &str,
        kind: &str,
        data: Value,
    ) -> Value {
        let id = client.fresh_id();
        let sent = json!({ "type": kind, "data": data.clone(), "event": { "id": id, "date": 1_764_000_000_000i64 } });
        self.record(message, &sent);
        let response = client.request_with_id(kind, data, &id).await;
        self.answer(response_message, &response);
        response
    }

    fn answer(&mut self, response_message: &str, response: &Value) {
        let refused = response["error"]["status"] == true;
        self.record(
            if refused {
                "errorResponse"
            } else {
                response_message
            },
            response,
        );
    }

    async fn event(&mut self, client: &mut Client, kind: &str, message: &str) -> Value {
        let frame = client.event(kind).await;
        self.record(message, &frame);
        frame
    }

    async fn call(&mut self, from: &mut Client, to: &str) -> Value {
        let response = self
            .request(
                from,
                "requestDirectVideochat",
                "requestDirectVideochatResponse",
                "videochat:requestDirectVideochat",
                json!({ "targetUser": to }),
            )
            .await;
        ok(&response)["videochatRequestId"].clone()
    }

    async fn accept(&mut self, client: &mut Client, request_id: &Value) -> Value {
        self.request(
            client,
            "acceptVideochatRequest",
            "acceptVideochatRequestResponse",
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": request_id }),
        )
        .await
    }

    async fn decline(&mut self, client: &mut Client, request_id: &Value) -> Value {
        self.request(
            client,
            "declineVideochatRequest",
            "declineVideochatRequestResponse",
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": request_id }),
        )
        .await
    }

    async fn invite(&mut self, client: &mut Client, target: &str, videochat: &Value) -> Value {
        let response = self
            .request(
                client,
                "invite",
                "inviteResponse",
                "videochat:invite",
                json!({ "targetUser": target, "videochatId": videochat }),
            )
            .await;
        ok(&response)["videochatRequestId"].clone()
    }

    /// A request that must be refused with `code`.
    async fn refused(
        &mut self,
        client: &mut Client,
        message: &str,
        kind: &str,
        data: Value,
        code: i64,
    ) {
        let response = self.request(client, message, "-", kind, data).await;
        err(&response, code);
    }

    /// A frame that is not a valid request (so not recorded as sent): only its answer counts.
    async fn raw(&mut self, client: &mut Client, text: &str, code: i64) {
        let response = client.send_raw(text).await;
        err(&response, code);
        self.answer("-", &response);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_frames_match_the_asyncapi_document() {
    let mut capture = Capture::default();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;
    let mut dave = app.connect("dave").await;

    // A direct call, accepted.
    let first = capture.call(&mut alice, "bob").await;
    capture
        .event(&mut bob, REQUESTED, "videochatRequested")
        .await;
    let credentials = capture.accept(&mut bob, &first).await;
    let videochat = ok(&credentials)["videochatId"].clone();
    capture
        .event(
            &mut alice,
            DIRECT_ACCEPTED,
            "directVideochatRequestAccepted",
        )
        .await;
    capture.event(&mut bob, ACCEPTED, "videochatAccepted").await;

    // carol calls bob, who merges her into the videochat.
    let second = capture.call(&mut carol, "bob").await;
    capture
        .event(&mut bob, REQUESTED, "videochatRequested")
        .await;
    let merged = capture
        .request(
            &mut bob,
            "mergeToVideochat",
            "mergeToVideochatResponse",
            "videochat:mergeToVideochat",
            json!({ "videochatId": videochat, "videochatRequestId": second }),
        )
        .await;
    ok(&merged);
    capture
        .event(
            &mut carol,
            DIRECT_ACCEPTED,
            "directVideochatRequestAccepted",
        )
        .await;
    capture.event(&mut bob, ACCEPTED, "videochatAccepted").await;

    // alice invites dave (an invitation carries videochatId and participants); he declines.
    let invitation = capture.invite(&mut alice, "dave", &videochat).await;
    let ring = capture
        .event(&mut dave, REQUESTED, "videochatRequested")
        .await;
    assert_eq!(ring["data"]["counter"], 3);
    ok(&capture.decline(&mut dave, &invitation).await);
    for client in [&mut dave, &mut alice] {
        let ended = capture.event(client, DECLINED, "videochatDeclined").await;
        assert_eq!(ended["data"]["reason"], "declined");
    }

    // Invited again, alice withdraws it: cancelled.
    let invitation = capture.invite(&mut alice, "dave", &videochat).await;
    capture
        .event(&mut dave, REQUESTED, "videochatRequested")
        .await;
    ok(&capture.decline(&mut alice, &invitation).await);
    let ended = capture
        .event(&mut dave, DECLINED, "videochatDeclined")
        .await;
    assert_eq!(ended["data"]["reason"], "cancelled");

    // A ring replayed to a socket that connects while it rings; then glare: dave calls alice
    // back, which accepts her ring, and both get their credentials as an event.
    let third = capture.call(&mut alice, "dave").await;
    capture
        .event(&mut dave, REQUESTED, "videochatRequested")
        .await;
    // Once dave's phone's delivery is reported (every 100 ms), the ring is seen: the laptop is
    // shown it as a replay, not as a missed event.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let mut dave_laptop = app.connect("dave").await;
    let replay = capture
        .event(&mut dave_laptop, REQUESTED, "videochatRequested")
        .await;
    assert!(
        replay["event"]["id"]
            .as_str()
            .unwrap()
            .starts_with("replay_")
    );
    let glare = capture.call(&mut dave, "alice").await;
    assert_eq!(glare, third);
    capture
        .event(&mut dave, DIRECT_ACCEPTED, "directVideochatRequestAccepted")
        .await;
    capture
        .event(
            &mut alice,
            DIRECT_ACCEPTED,
            "directVideochatRequestAccepted",
        )
        .await;

    // Alice's history: accepted, declined, cancelled and glare-accepted calls.
    let page = capture
        .request(
            &mut alice,
            "listCalls",
            "listCallsResponse",
            "videochat:listCalls",
            json!({}),
        )
        .await;
    assert!(ok(&page)["calls"].as_array().unwrap().len() >= 3, "{page}");
    let page = capture
        .request(
            &mut bob,
            "listCalls",
            "listCallsResponse",
            "videochat:listCalls",
            json!({ "limit": 1, "before": 4_000_000_000_000i64 }),
        )
        .await;
    assert!(ok(&page)["next"].is_i64(), "{page}");
    capture
        .raw(
            &mut alice,
            r#"{"type":"videochat:listCalls","data":{"limit":0},"event":{"id":"e-list"}}"#,
            1002,
        )
        .await;

    // Every error a client can provoke (1003 and 1004 need a flood or a failure).
    capture.raw(&mut alice, "not json", 1000).await;
    capture
        .raw(
            &mut alice,
            r#"{"type":"videochat:nope","event":{"id":"e-1001"}}"#,
            1001,
        )
        .await;
    capture
        .raw(
            &mut alice,
            r#"{"type":"videochat:requestDirectVideochat","data":{},"event":{"id":"e-1002"}}"#,
            1002,
        )
        .await;
    let direct = "videochat:requestDirectVideochat";
    capture
        .refused(
            &mut alice,
            "requestDirectVideochat",
            direct,
            json!({ "targetUser": "nobody" }),
            1021,
        )
        .await;
    app.connect("erin").await.close().await;
    capture
        .refused(
            &mut alice,
            "requestDirectVideochat",
            direct,
            json!({ "targetUser": "erin" }),
            10011,
        )
        .await;
    capture
        .refused(
            &mut alice,
            "requestDirectVideochat",
            direct,
            json!({ "targetUser": "alice" }),
            10016,
        )
        .await;
    let accept = "videochat:acceptVideochatRequest";
    capture
        .refused(
            &mut alice,
            "acceptVideochatRequest",
            accept,
            json!({ "videochatRequestId": "vcr_missing" }),
            10012,
        )
        .await;
    let fourth = capture.call(&mut alice, "carol").await;
    capture
        .event(&mut carol, REQUESTED, "videochatRequested")
        .await;
    capture
        .refused(
            &mut alice,
            "acceptVideochatRequest",
            accept,
            json!({ "videochatRequestId": fourth }),
            10013,
        )
        .await;
    capture
        .refused(
            &mut bob,
            "acceptVideochatRequest",
            accept,
            json!({ "videochatRequestId": first }),
            10014,
        )
        .await;
    capture
        .refused(
            &mut alice,
            "invite",
            "videochat:invite",
            json!({ "targetUser": "dave", "videochatId": "vc_missing" }),
            10015,
        )
        .await;

    // Push devices (CONTRACT §6): registered, forgotten, and a register with a bad platform.
    let registered = capture
        .request(
            &mut bob,
            "registerPushDevice",
            "registerPushDeviceResponse",
            "videochat:registerPushDevice",
            json!({ "platform": "fcm", "token": "fcm-token-1", "voip": false }),
        )
        .await;
    assert_eq!(ok(&registered), json!({}));
    let unregistered = capture
        .request(
            &mut bob,
            "unregisterPushDevice",
            "unregisterPushDeviceResponse",
            "videochat:unregisterPushDevice",
            json!({ "token": "fcm-token-1" }),
        )
        .await;
    assert_eq!(ok(&unregistered), json!({}));
    capture
        .raw(
            &mut bob,
            r#"{"type":"videochat:registerPushDevice","data":{"platform":"sms","token":"t","voip":false},"event":{"id":"push-bad"}}"#,
            1002,
        )
        .await;

    // A client resuming from a position never reached is sent a snapshot.
    let url = format!("{}?lastEventId=999999", app.ws_url());
    let mut resuming = Client::connect(&url, "alice", &TestApp::token("alice")).await;
    let resync = capture.event(&mut resuming, RESYNC, "resync").await;
    assert!(!resync["data"]["videochats"].as_array().unwrap().is_empty());

    // A ring nobody answers: timeout, on a stack whose rings last a second.
    let quick = TestApp::spawn_with(Backend::Sqlite, |_, handshake| {
        handshake.ring_timeout_s = 1.0;
    })
    .await;
    let mut alice = quick.connect("alice").await;
    let mut bob = quick.connect("bob").await;
    capture.call(&mut alice, "bob").await;
    capture
        .event(&mut bob, REQUESTED, "videochatRequested")
        .await;
    for client in [&mut alice, &mut bob] {
        let ended = capture.event(client, DECLINED, "videochatDeclined").await;
        assert_eq!(ended["data"]["reason"], "timeout");
    }
    // Bob's next socket is told of the call he missed.
    bob.close().await;
    let mut bob = quick.connect("bob").await;
    let shown = capture.event(&mut bob, MISSED_CALLS, "missedCalls").await;
    assert_eq!(shown["data"]["count"], 1);
    quick.stop().await;
    app.stop().await;

    // Check them with the AsyncAPI parser and ajv.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Kept after the run, to look at.
    let frames_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("asyncapi-frames.json");
    std::fs::write(
        &frames_file,
        serde_json::to_string_pretty(&json!({ "frames": capture.frames })).unwrap(),
    )
    .unwrap();
    let deps = npm_install("asyncapi", &root.join("docs/asyncapi/package.json"));
    let (passed, printed) = run_node(
        &root.join("docs/asyncapi/check-frames.mjs"),
        &[frames_file.to_str().unwrap()],
        &deps,
        &[],
        std::time::Duration::from_secs(120),
    )
    .await;
    println!("{printed}");
    assert!(
        passed,
        "frames disagree with docs/asyncapi.yaml:\n{printed}"
    );
}
