//! LiveKit webhooks in: who is in a videochat now. Webhooks are produced exactly as a LiveKit
//! server produces them, by LiveKit's own library (`tests/livekit_webhooks/sign_webhooks.py`),
//! and posted to the real gateway; forged or tampered ones are refused and change nothing.
//! Each on SQLite and Postgres.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const ENDPOINT: &str = "/webhooks/livekit";
/// An engine-clock instant (Unix seconds) for the webhooks' `createdAt`.
const T0: i64 = 1_800_000_000;

/// One webhook to sign: (event, room, identity, createdAt seconds).
struct Case<'a> {
    event: &'a str,
    room: &'a str,
    identity: Option<&'a str>,
    at: i64,
    secret: &'a str,
    tamper: bool,
}

impl<'a> Case<'a> {
    fn new(event: &'a str, room: &'a str, identity: Option<&'a str>, at: i64) -> Self {
        Self {
            event,
            room,
            identity,
            at,
            secret: "secret",
            tamper: false,
        }
    }
}

/// (Authorization, body) for each case, made by LiveKit's Python SDK.
fn sign(cases: &[Case<'_>]) -> Vec<(String, String)> {
    let (python, dir) = python_venv("livekit_webhooks");
    let input: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({
                "event": c.event, "room": c.room, "identity": c.identity, "created_at": c.at,
                "api_key": "devkey", "api_secret": c.secret, "tamper": c.tamper,
            })
        })
        .collect();
    let mut child = std::process::Command::new(python)
        .arg(dir.join("sign_webhooks.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(input).to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "sign_webhooks.py failed");
    let signed: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    signed
        .into_iter()
        .map(|s| {
            (
                s["authorization"].as_str().unwrap().to_owned(),
                s["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn post(app: &TestApp, authorization: &str, body: &str) -> (u16, Value) {
    let (status, body) = http_request(
        app.bound.ws,
        "POST",
        ENDPOINT,
        &[
            ("Authorization", authorization),
            ("Content-Type", "application/webhook+json"),
        ],
        body,
    )
    .await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Posts one signed webhook; asserts it was accepted and whether it changed something.
async fn deliver(app: &TestApp, case: Case<'_>, applied: bool) {
    let event = case.event.to_owned();
    let (authorization, body) = sign(&[case]).pop().unwrap();
    let (status, reply) = post(app, &authorization, &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["event"], event.as_str());
    assert_eq!(reply["applied"], applied, "{event}: {reply}");
}

/// Alice invites `target` into `videochat`: the ring it sees (which carries `participants` and
/// `counter`); the target then declines, so that it can be invited again.
async fn invite_ring(
    inviter: &mut Client,
    target: &mut Client,
    videochat: &Value,
) -> (Vec<String>, u64) {
    let response = inviter
        .request(
            "videochat:invite",
            json!({ "targetUser": target.user, "videochatId": videochat }),
        )
        .await;
    let ring = ok(&response)["videochatRequestId"].clone();
    let shown = target.event(REQUESTED).await;
    assert_eq!(shown["data"]["videochatRequestId"], ring);
    ok(&target
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": ring }),
        )
        .await);
    let people = shown["data"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    (people, shown["data"]["counter"].as_u64().unwrap())
}

/// Alice and bob in a videochat (its id and room); carol connected to be invited.
async fn call(app: &TestApp) -> (Client, Client, Client, Value, String) {
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let carol = app.connect("carol").await;
    let ring = ring(&mut alice, &mut bob).await;
    let (for_bob, _) = accept(&mut alice, &mut bob, &ring).await;
    let room = for_bob["room"].as_str().unwrap().to_owned();
    (alice, bob, carol, for_bob["videochatId"].clone(), room)
}

/// After `participant_left` an invite ring no longer counts bob; after he joins again, it does.
/// Late and repeated webhooks change nothing. His time in the room shows in his history.
async fn who_left_the_room_is_no_longer_counted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut alice, mut bob, mut carol, videochat, room) = call(&app).await;
    assert_eq!(
        invite_ring(&mut alice, &mut carol, &videochat).await,
        (vec!["alice".to_owned(), "bob".to_owned()], 2)
    );

    deliver(
        &app,
        Case::new("participant_joined", &room, Some("bob"), T0),
        true,
    )
    .await;
    deliver(
        &app,
        Case::new("participant_left", &room, Some("bob"), T0 + 42),
        true,
    )
    .await;
    assert_eq!(
        invite_ring(&mut alice, &mut carol, &videochat).await,
        (vec!["alice".to_owned()], 1),
        "bob left"
    );
    // Late (older than the leave) and repeated webhooks change nothing.
    deliver(
        &app,
        Case::new("participant_joined", &room, Some("bob"), T0 + 1),
        false,
    )
    .await;
    deliver(
        &app,
        Case::new("participant_left", &room, Some("bob"), T0 + 42),
        true,
    )
    .await;
    assert_eq!(invite_ring(&mut alice, &mut carol, &videochat).await.1, 1);
    // Events the service does not use, rooms and people it does not know: accepted, ignored.
    deliver(
        &app,
        Case::new("track_published", &room, Some("alice"), T0 + 43),
        false,
    )
    .await;
    deliver(
        &app,
        Case::new("participant_left", "no-such-room", Some("bob"), T0 + 43),
        false,
    )
    .await;
    deliver(
        &app,
        Case::new("participant_left", &room, Some("mallory"), T0 + 43),
        false,
    )
    .await;

    // Bob's history: in the room for the 42 s LiveKit reported, ended when he left.
    let page = ok(&bob.request("videochat:listCalls", json!({})).await);
    let first = &page["calls"][0];
    assert_eq!(first["outcome"], "accepted", "{page}");
    assert_eq!(first["inRoomMs"], 42_000, "{first}");
    assert_eq!(first["endedAt"], (T0 + 42) * 1000, "{first}");

    // Bob, out of the room, is no longer its participant: he cannot invite (10015)...
    refused(
        &mut bob,
        "videochat:invite",
        json!({ "targetUser": "carol", "videochatId": videochat }),
        10015,
    )
    .await;
    // ...but can be invited back, and comes back with his own uid.
    let response = alice
        .request(
            "videochat:invite",
            json!({ "targetUser": "bob", "videochatId": videochat }),
        )
        .await;
    let back = ok(&response)["videochatRequestId"].clone();
    bob.event(REQUESTED).await;
    let again = ok(&bob
        .request(
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": back }),
        )
        .await);
    assert_eq!(again["uid"], 2, "{again}");
    assert_eq!(
        invite_ring(&mut alice, &mut carol, &videochat).await.1,
        2,
        "bob is back"
    );
    // He rejoins the room: counted once.
    deliver(
        &app,
        Case::new("participant_joined", &room, Some("bob"), T0 + 100),
        true,
    )
    .await;
    assert_eq!(invite_ring(&mut alice, &mut carol, &videochat).await.1, 2);
    app.stop().await;
}

/// After `room_finished` the videochat is over: invite and merge into it answer 10015, and an
/// invite still ringing is cancelled for both sides.
async fn a_finished_room_ends_its_videochat(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut alice, mut bob, mut carol, videochat, room) = call(&app).await;
    let response = alice
        .request(
            "videochat:invite",
            json!({ "targetUser": "carol", "videochatId": videochat }),
        )
        .await;
    let ringing = ok(&response)["videochatRequestId"].clone();
    carol.event(REQUESTED).await;

    deliver(&app, Case::new("room_finished", &room, None, T0 + 60), true).await;
    for side in [&mut carol, &mut alice] {
        let ended = side.event(DECLINED).await;
        assert_eq!(ended["data"]["videochatRequestId"], ringing);
        assert_eq!(ended["data"]["reason"], "cancelled");
    }
    refused(
        &mut carol,
        "videochat:acceptVideochatRequest",
        json!({ "videochatRequestId": ringing }),
        10014,
    )
    .await;
    refused(
        &mut alice,
        "videochat:invite",
        json!({ "targetUser": "carol", "videochatId": videochat }),
        10015,
    )
    .await;
    let mut dave = app.connect("dave").await;
    let merge = ring(&mut dave, &mut bob).await;
    refused(
        &mut bob,
        "videochat:mergeToVideochat",
        json!({ "videochatId": videochat, "videochatRequestId": merge }),
        10015,
    )
    .await;
    // Finishing again, or joining a finished room, changes nothing.
    deliver(
        &app,
        Case::new("room_finished", &room, None, T0 + 61),
        false,
    )
    .await;
    deliver(
        &app,
        Case::new("participant_joined", &room, Some("bob"), T0 + 62),
        false,
    )
    .await;
    // History says when it ended for each of them.
    let page = ok(&alice
        .request("videochat:listCalls", json!({ "limit": 100 }))
        .await);
    let call = page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "direct")
        .unwrap();
    assert_eq!(call["endedAt"], (T0 + 60) * 1000, "{call}");
    app.stop().await;
}

/// A webhook that LiveKit did not sign (another secret), whose body was changed after signing,
/// or with no signature, is refused with 401 and changes nothing; so are the wrong method, an
/// engine whose webhooks are not received, and an oversized body.
async fn forged_or_tampered_webhooks_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut alice, _bob, mut carol, videochat, room) = call(&app).await;
    let mut forged = Case::new("participant_left", &room, Some("bob"), T0);
    forged.secret = "not-the-secret";
    let mut tampered = Case::new("room_finished", &room, None, T0);
    tampered.tamper = true;
    let signed = sign(&[forged, tampered]);
    for (authorization, body) in &signed {
        let (status, reply) = post(&app, authorization, body).await;
        assert_eq!(status, 401, "{reply}");
        assert!(
            reply["error"].as_str().unwrap().contains("not verified"),
            "{reply}"
        );
    }
    let (status, _) = http_request(app.bound.ws, "POST", ENDPOINT, &[], &signed[0].1).await;
    assert_eq!(status, 401, "no signature");
    let (status, _) = http_request(app.bound.ws, "GET", ENDPOINT, &[], "").await;
    assert_eq!(status, 405);
    let (status, _) = http_request(
        app.bound.ws,
        "POST",
        "/webhooks/zoom",
        &[("Authorization", &signed[0].0)],
        "{}",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(declared_oversized(&app).await, 413);
    // Nothing changed: bob still counts, the videochat is still on.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        invite_ring(&mut alice, &mut carol, &videochat).await,
        (vec!["alice".to_owned(), "bob".to_owned()], 2)
    );
    app.stop().await;
}

/// Posts only the headers of a 300 KiB body: refused before it is read.
async fn declared_oversized(app: &TestApp) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.bound.ws).await.unwrap();
    let head = format!(
        "POST {ENDPOINT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        300 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default()
}

on_both_backends!(
    who_left_the_room_is_no_longer_counted,
    a_finished_room_ends_its_videochat,
    forged_or_tampered_webhooks_are_refused,
);
