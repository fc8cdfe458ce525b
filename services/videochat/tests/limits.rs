//! The handshake service's own limits (CONTRACT §6): pending rings per user, invites per
//! videochat per minute, sockets per user across gateways. Each trips with its own code, leaves
//! the socket usable, and changes nothing: the refused ring rings nobody, the refused socket is
//! not present.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use videochat_proto::v1 as pb;

const REQUEST: &str = "videochat:requestDirectVideochat";
const INVITE: &str = "videochat:invite";
const DECLINE: &str = "videochat:declineVideochatRequest";

on_both_backends!(
    pending_rings_stop_at_the_limit_and_free_up_when_a_ring_ends,
    a_user_ringing_many_at_once_is_stopped_at_the_default_limit,
    invites_into_a_videochat_stop_at_the_limit_per_minute,
    sockets_per_user_stop_at_the_limit_across_gateways,
);

/// The service's Prometheus text.
async fn service_metrics(app: &TestApp) -> String {
    http_get(app.bound.metrics, "/metrics").await.unwrap().1
}

async fn pending_for(app: &TestApp, user: &str) -> Vec<pb::VideochatRequested> {
    app.handshake_client()
        .await
        .list_pending_rings(pb::ListPendingRingsRequest {
            user_id: user.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .rings
}

async fn pending_rings_stop_at_the_limit_and_free_up_when_a_ring_ends(backend: Backend) {
    let app = TestApp::spawn_with(backend, |_, h| h.max_pending_rings_per_user = 3).await;
    let mut alice = app.connect("alice").await;
    let mut targets = Vec::new();
    for name in ["bob", "carol", "dave", "erin"] {
        targets.push(app.connect(name).await);
    }
    let mut rings = Vec::new();
    for target in targets.iter_mut().take(3) {
        rings.push(ring(&mut alice, target).await);
    }
    // Asking again for a ring under way is not a new ring: answered, not limited.
    let again = alice.request(REQUEST, json!({ "targetUser": "bob" })).await;
    assert_eq!(ok(&again)["videochatRequestId"], rings[0]);

    let key = alice.fresh_id();
    let refused = alice
        .request_with_id(REQUEST, json!({ "targetUser": "erin" }), &key)
        .await;
    err(&refused, 10017);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 3"),
        "{refused}"
    );
    // Nothing changed: erin is not rung, now nor later.
    targets[3]
        .no_event(REQUESTED, Duration::from_millis(300))
        .await;
    assert!(pending_for(&app, "erin").await.is_empty());
    assert!(
        service_metrics(&app)
            .await
            .contains("limit=\"pending_rings\"")
    );

    // The socket stays usable; when a ring ends there is room again, and the refusal was not
    // recorded under its event.id: the same request is now served.
    ok(&alice
        .request(DECLINE, json!({ "videochatRequestId": rings[0] }))
        .await);
    let served = alice
        .request_with_id(REQUEST, json!({ "targetUser": "erin" }), &key)
        .await;
    let id = ok(&served)["videochatRequestId"].clone();
    assert_eq!(
        targets[3].event(REQUESTED).await["data"]["videochatRequestId"],
        id
    );
    app.stop().await;
}

async fn a_user_ringing_many_at_once_is_stopped_at_the_default_limit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut targets = Vec::new();
    for i in 0..25 {
        targets.push(app.connect(&format!("user-{i}")).await);
    }
    // Every request sent before any answer is read, as a client dialling a crowd would.
    let mut keys = Vec::new();
    for target in &targets {
        let key = alice.fresh_id();
        let frame = json!({
            "type": REQUEST,
            "data": { "targetUser": target.user },
            "event": { "id": key, "date": 1_764_000_000_000i64 },
        });
        alice.send_text(frame.to_string()).await;
        keys.push(key);
    }
    let mut answers = Vec::new();
    for key in &keys {
        answers.push(alice.response_to(key).await);
    }
    let served: Vec<&Value> = answers
        .iter()
        .filter(|a| a["error"]["status"] == false)
        .collect();
    assert_eq!(served.len(), 20, "the default limit is 20");
    for refused in &answers[20..] {
        err(refused, 10017);
    }
    // The five refused targets were not rung.
    for target in &mut targets[20..] {
        target.no_event(REQUESTED, Duration::from_millis(100)).await;
    }
    app.stop().await;
}

async fn invites_into_a_videochat_stop_at_the_limit_per_minute(backend: Backend) {
    let app = TestApp::spawn_with(backend, |_, h| h.max_invites_per_videochat_per_min = 2).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let call = ring(&mut alice, &mut bob).await;
    let (credentials, _) = accept(&mut alice, &mut bob, &call).await;
    let videochat = credentials["videochatId"].clone();
    let mut carol = app.connect("carol").await;
    let mut dave = app.connect("dave").await;
    let mut erin = app.connect("erin").await;

    let invite = |target: &str| json!({ "targetUser": target, "videochatId": videochat });
    let to_carol = ok(&alice.request(INVITE, invite("carol")).await)["videochatRequestId"].clone();
    carol.event(REQUESTED).await;
    // Declined invites still count: the limit is on invites made, not on rings pending.
    ok(&carol
        .request(DECLINE, json!({ "videochatRequestId": to_carol }))
        .await);
    ok(&bob.request(INVITE, invite("dave")).await);
    dave.event(REQUESTED).await;

    // A third within the minute, by anyone in the videochat: refused, erin not rung.
    err(&alice.request(INVITE, invite("erin")).await, 10018);
    err(&bob.request(INVITE, invite("erin")).await, 10018);
    erin.no_event(REQUESTED, Duration::from_millis(300)).await;
    assert!(pending_for(&app, "erin").await.is_empty());
    assert!(
        service_metrics(&app)
            .await
            .contains("limit=\"invites_per_videochat\"")
    );
    // The socket stays usable, and other videochats are not concerned.
    let direct = ring(&mut alice, &mut erin).await;
    assert!(direct.is_string());
    app.stop().await;
}

async fn sockets_per_user_stop_at_the_limit_across_gateways(backend: Backend) {
    let app = TestApp::spawn_with(backend, |_, h| h.max_sockets_per_user_cluster = 2).await;
    // A second gateway on the same service: the cap counts both.
    let (mut config, _) = configs();
    config.handshake_url = app.grpc_url();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let gateway = tokio::spawn(videochat_gateway::run(
        config,
        listener,
        videochat::telemetry::prometheus(),
        stop.clone(),
    ));
    until_ready(second).await;
    let second_url = format!("ws://{second}/ws");

    let _phone = app.connect("alice").await;
    let mut laptop = Client::connect(&second_url, "alice", &TestApp::token("alice")).await;
    // The third, on either gateway: HTTP 429 naming 10019, no socket.
    for url in [app.ws_url(), second_url.clone()] {
        let attempt = tokio_tungstenite::connect_async(format!(
            "{url}?access_token={}",
            TestApp::token("alice")
        ))
        .await;
        match attempt {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 429);
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned();
                assert!(body.contains("10019"), "{body}");
            }
            other => panic!("expected 429, got {other:?}"),
        }
    }
    assert!(
        service_metrics(&app)
            .await
            .contains("limit=\"sockets_per_user\"")
    );
    // Nothing changed: alice still has two sockets, both reached by a ring.
    let mut bob = app.connect("bob").await;
    let call = ring(&mut bob, &mut laptop).await;
    assert!(call.is_string());
    let (profile, _) = app
        .users_client()
        .await
        .get_user(pb::GetUserRequest {
            user_id: "alice".into(),
        })
        .await
        .map(|r| {
            let r = r.into_inner();
            (r.user, r.available)
        })
        .unwrap();
    assert_eq!(profile.unwrap().id, "alice");
    // A socket closing makes room again.
    laptop.close().await;
    let _again = Client::connect(&second_url, "alice", &TestApp::token("alice")).await;
    stop.cancel();
    let _ = gateway.await;
    app.stop().await;
}
