//! The WebSocket envelope: bad frames, authentication, limits, health — on both stores.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const REQUEST: &str = "videochat:requestDirectVideochat";

on_both_backends!(
    bad_frames_get_errors_and_the_socket_stays_usable,
    sockets_without_a_valid_token_are_refused_with_401,
    a_socket_flooding_frames_is_rate_limited,
    health_readiness_and_metrics_answer,
    a_silent_socket_is_closed_and_its_presence_dropped,
    a_message_over_the_hard_limit_closes_the_socket_with_1009,
);

async fn a_message_over_the_hard_limit_closes_the_socket_with_1009(backend: Backend) {
    let app = TestApp::spawn_with(backend, |gateway, _| {
        gateway.max_frame_bytes = 1024;
        gateway.max_message_bytes = 64 * 1024;
    })
    .await;
    let mut alice = app.connect("alice").await;
    // Between the two limits: answered, socket open.
    let padded = format!(
        r#"{{"type":"x","event":{{"id":"p-1"}},"pad":"{}"}}"#,
        "x".repeat(4096)
    );
    err(&alice.send_raw(&padded).await, 1002);
    // Over the hard limit: closed with 1009.
    alice.send_text("x".repeat(128 * 1024)).await;
    assert_eq!(alice.closed_by_server().await, Some(1009));
    app.stop().await;
}

async fn a_silent_socket_is_closed_and_its_presence_dropped(backend: Backend) {
    let app = TestApp::spawn_with(backend, |gateway, _| {
        gateway.ping_interval_s = 0.1;
        gateway.idle_timeout_s = 0.5;
    })
    .await;
    let mut alice = app.connect("alice").await;
    let bob = app.connect("bob").await;
    // Bob's client stops reading (so it never answers the server's pings). Alice keeps talking.
    let silent_until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < silent_until {
        err(
            &alice
                .request(REQUEST, json!({ "targetUser": "nobody" }))
                .await,
            1021,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server sent Close 1008 and hung up; depending on timing the client sees the close
    // frame or only the reset (its queued pongs can no longer be written).
    let code = bob.closed_by_server().await;
    assert!(matches!(code, None | Some(1008)), "closed with {code:?}");
    // Alice, who answered pings all along, is still connected; bob is gone.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let frame = alice.request(REQUEST, json!({ "targetUser": "bob" })).await;
        if frame["error"]["code"] == 10011 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob still available: {frame}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

async fn bad_frames_get_errors_and_the_socket_stays_usable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;

    let frame = alice.send_raw("this is not json").await;
    err(&frame, 1000);
    assert!(frame.get("type").is_none());
    err(&alice.send_raw("[1, 2, 3]").await, 1000);
    err(&alice.send_raw(r#""a string""#).await, 1000);
    let no_type = alice
        .send_raw(r#"{"data": {}, "event": {"id": "n-1"}}"#)
        .await;
    err(&no_type, 1000);
    assert_eq!(no_type["event"]["id"], "n-1");
    err(
        &alice
            .send_raw(r#"{"type": 42, "event": {"id": "n-2"}}"#)
            .await,
        1000,
    );

    let unknown = alice
        .send_raw(
            r#"{"type": "videochat:teleport", "data": {}, "event": {"id": "u-1", "date": 1}}"#,
        )
        .await;
    err(&unknown, 1001);
    assert_eq!(unknown["type"], "videochat:teleport");
    assert_eq!(unknown["event"]["id"], "u-1");

    let missing = alice
        .send_raw(
            r#"{"type": "videochat:requestDirectVideochat", "data": {}, "event": {"id": "m-1"}}"#,
        )
        .await;
    err(&missing, 1002);
    assert_eq!(missing["type"], REQUEST);
    assert_eq!(missing["event"]["id"], "m-1");
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("targetUser")
    );

    let ill_typed = alice
        .send_raw(r#"{"type": "videochat:acceptVideochatRequest", "data": {"videochatRequestId": 7}, "event": {"id": "t-1"}}"#)
        .await;
    err(&ill_typed, 1002);
    assert!(
        ill_typed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("videochatRequestId")
    );

    let too_long = alice
        .request(REQUEST, json!({ "targetUser": "x".repeat(500) }))
        .await;
    err(&too_long, 1002);
    assert!(
        too_long["error"]["message"]
            .as_str()
            .unwrap()
            .contains("targetUser")
    );

    let no_event_id = alice
        .send_raw(r#"{"type": "videochat:requestDirectVideochat", "data": {"targetUser": "bob"}}"#)
        .await;
    err(&no_event_id, 1002);
    assert!(
        no_event_id["error"]["message"]
            .as_str()
            .unwrap()
            .contains("event.id")
    );

    let huge = format!(
        r#"{{"type": "videochat:requestDirectVideochat", "data": {{"targetUser": "bob", "pad": "{}"}}, "event": {{"id": "h-1"}}}}"#,
        "x".repeat(1024 * 1024)
    );
    let refused = alice.send_raw(&huge).await;
    err(&refused, 1002);
    assert_eq!(refused["event"]["id"], "h-1");

    // Binary frames are not part of the protocol.
    err(&alice.send_binary(b"{}".to_vec()).await, 1000);

    // None of that changed anything, and the socket still serves requests.
    bob.no_event(REQUESTED, Duration::from_millis(200)).await;
    let ring = ok(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await);
    assert!(ring["videochatRequestId"].is_string());
    bob.event(REQUESTED).await;
    app.stop().await;
}

async fn sockets_without_a_valid_token_are_refused_with_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let status_of = |request| async move {
        match tokio_tungstenite::connect_async(request).await {
            Ok((_, response)) => response.status().as_u16(),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                response.status().as_u16()
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    };
    // No token at all.
    assert_eq!(
        status_of(app.ws_url().into_client_request().unwrap()).await,
        401
    );
    // Signed with another secret.
    let forged =
        videochat_gateway::auth::sign_dev_token("not-the-secret", "mallory", None, 60).unwrap();
    assert_eq!(
        status_of(
            format!("{}?access_token={forged}", app.ws_url())
                .into_client_request()
                .unwrap()
        )
        .await,
        401
    );
    // Expired.
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "alice", "exp": 1_000 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        status_of(
            format!("{}?access_token={expired}", app.ws_url())
                .into_client_request()
                .unwrap()
        )
        .await,
        401
    );
    // Garbage, and a token without sub.
    assert_eq!(
        status_of(
            format!("{}?access_token=abc.def.ghi", app.ws_url())
                .into_client_request()
                .unwrap()
        )
        .await,
        401
    );
    let no_sub = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "exp": 4_000_000_000u64 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        status_of(
            format!("{}?access_token={no_sub}", app.ws_url())
                .into_client_request()
                .unwrap()
        )
        .await,
        401
    );

    // The header form works, and nobody refused above became a known user.
    let mut request = app.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", TestApp::token("alice"))
            .parse()
            .unwrap(),
    );
    assert_eq!(status_of(request).await, 101);
    let mut alice = app.connect("alice").await;
    refused(
        &mut alice,
        REQUEST,
        json!({ "targetUser": "mallory" }),
        1021,
    )
    .await;
    app.stop().await;
}

async fn a_socket_flooding_frames_is_rate_limited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |gateway, _| {
        gateway.rate_limit_per_s = 1;
        gateway.rate_limit_burst = 3;
    })
    .await;
    let mut alice = app.connect("alice").await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let frame = alice
            .request(REQUEST, json!({ "targetUser": "nobody" }))
            .await;
        codes.push(frame["error"]["code"].as_i64().unwrap());
    }
    assert_eq!(&codes[..3], &[1021, 1021, 1021]);
    assert!(codes[3..].contains(&1003), "{codes:?}");
    // Other sockets are not affected.
    let mut other = app.connect("alice").await;
    refused(&mut other, REQUEST, json!({ "targetUser": "nobody" }), 1021).await;
    app.stop().await;
}

/// The value of one series in a Prometheus text exposition (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn health_readiness_and_metrics_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(http_get(app.bound.ws, "/healthz").await.unwrap().0, 200);
    assert_eq!(http_get(app.bound.ws, "/readyz").await.unwrap().0, 200);
    assert_eq!(http_get(app.bound.ws, "/nope").await.unwrap().0, 404);
    let declined = "videochat_request_outcomes_total{outcome=\"declined\"}";
    let frames_ok = "videochat_gateway_frames_in_total{type=\"videochat:declineVideochatRequest\",result=\"ok\"}";
    let before_service = http_get(app.bound.metrics, "/metrics").await.unwrap().1;
    let before_gateway = http_get(app.bound.ws, "/metrics").await.unwrap().1;

    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let id =
        ok(&alice.request(REQUEST, json!({ "targetUser": "bob" })).await)["videochatRequestId"]
            .clone();
    bob.event(REQUESTED).await;
    ok(&bob
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": id }),
        )
        .await);
    alice.event(DECLINED).await;

    let (status, gateway_metrics) = http_get(app.bound.ws, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(sample(&gateway_metrics, frames_ok) > sample(&before_gateway, frames_ok));
    for name in [
        "videochat_gateway_open_sockets",
        "videochat_gateway_sockets_per_user",
        "videochat_gateway_rpc_seconds",
        "videochat_event_delivery_seconds",
        "videochat_gateway_frames_out_total",
    ] {
        assert!(
            gateway_metrics.contains(name),
            "gateway /metrics lacks {name}"
        );
    }
    let (status, service_metrics) = http_get(app.bound.metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(sample(&service_metrics, declined) > sample(&before_service, declined));
    for name in [
        "videochat_ring_to_answer_seconds",
        "videochat_grpc_server_seconds",
        "videochat_events_pushed_total",
        "videochat_events_emitted_total",
    ] {
        assert!(
            service_metrics.contains(name),
            "service /metrics lacks {name}"
        );
    }
    app.stop().await;
}
