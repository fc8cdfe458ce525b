//! What an outside client meets before and around a socket (issue #9, docs/security.md): token
//! rules, the JWKS file reloaded while running, the origin allow-list, the limits on connections
//! that never finish their upgrade and on sockets per user, and RFC 6455 close codes for
//! protocol violations. Real stack, real sockets; the violations are written byte by byte on a
//! raw TCP stream, since a WebSocket library will not send them.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const REQUEST: &str = "videochat:requestDirectVideochat";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An HS256 token with exactly these claims, signed with the test secret.
fn hs256(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The HTTP status of an upgrade with this token and `Origin` header.
async fn upgrade_status(app: &TestApp, token: &str, origin: Option<&str>) -> u16 {
    let mut request = format!("{}?access_token={token}", app.ws_url())
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

/// Asserts that nobody called `user` ever became known to the service.
async fn never_known(app: &TestApp, user: &str) {
    let mut witness = app.connect("witness").await;
    refused(&mut witness, REQUEST, json!({ "targetUser": user }), 1021).await;
}

/// The value of one series in the gateway's Prometheus exposition (0 when absent).
async fn gateway_metric(app: &TestApp, series: &str) -> f64 {
    let (_, text) = http_get(app.bound.ws, "/metrics").await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn limit_series(limit: &str) -> String {
    format!("videochat_gateway_limits_total{{limit=\"{limit}\"}}")
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_exp_is_refused_unless_development_relaxes_it() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let no_exp = hs256(json!({ "sub": "eternal" }));
    assert_eq!(upgrade_status(&app, &no_exp, None).await, 401);
    never_known(&app, "eternal").await;
    app.stop().await;

    let relaxed = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.jwt_allow_no_exp = true;
    })
    .await;
    assert_eq!(upgrade_status(&relaxed, &no_exp, None).await, 101);
    // Relaxed or not, an exp that is there is enforced.
    let expired = hs256(json!({ "sub": "eternal", "exp": 1_000 }));
    assert_eq!(upgrade_status(&relaxed, &expired, None).await, 401);
    relaxed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_padded_sub_is_refused_and_never_becomes_the_user_it_resembles() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let exp = now() + 600;
    for sub in [
        " bob ",
        "bob ",
        " bob",
        "\u{a0}bob",
        "bob\t",
        "bo\u{7}b",
        "",
    ] {
        let token = hs256(json!({ "sub": sub, "exp": exp }));
        assert_eq!(upgrade_status(&app, &token, None).await, 401, "{sub:?}");
    }
    // Bob was never connected by any of them: unknown, not merely unavailable.
    never_known(&app, "bob").await;
    never_known(&app, " bob ").await;
    // The real bob gets in, and is exactly "bob".
    let mut bob = app.connect("bob").await;
    let mut alice = app.connect("alice").await;
    ring(&mut alice, &mut bob).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_and_audience_when_configured_must_be_present_and_match() {
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.jwt_issuer = Some("https://id.example.test".into());
        gateway.jwt_audience = Some("videochat".into());
    })
    .await;
    let good = json!({ "sub": "alice", "exp": now() + 600, "iss": "https://id.example.test", "aud": "videochat" });
    assert_eq!(upgrade_status(&app, &hs256(good.clone()), None).await, 101);
    for (claim, value) in [
        ("iss", Some(json!("https://evil.example.test"))),
        ("iss", None),
        ("aud", Some(json!("somebody-else"))),
        ("aud", None),
    ] {
        let mut claims = good.clone();
        claims["sub"] = json!("mallory");
        match value {
            Some(value) => claims[claim] = value,
            None => {
                claims.as_object_mut().unwrap().remove(claim);
            }
        }
        assert_eq!(
            upgrade_status(&app, &hs256(claims.clone()), None).await,
            401,
            "{claims}"
        );
    }
    let mut claims = good.clone();
    claims["sub"] = json!("witness");
    let mut witness = Client::connect(&app.ws_url(), "witness", &hs256(claims)).await;
    refused(
        &mut witness,
        REQUEST,
        json!({ "targetUser": "mallory" }),
        1021,
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_within_the_leeway_is_tolerated_and_beyond_it_is_not() {
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.jwt_leeway_s = 30;
    })
    .await;
    let status = |claims: Value| {
        let token = hs256(claims);
        let app = &app;
        async move { upgrade_status(app, &token, None).await }
    };
    // Expired 10 s ago, or valid from 10 s from now: within 30 s of skew.
    assert_eq!(status(json!({ "sub": "a", "exp": now() - 10 })).await, 101);
    assert_eq!(
        status(json!({ "sub": "a", "exp": now() + 600, "nbf": now() + 10 })).await,
        101
    );
    // Two minutes either way: refused.
    assert_eq!(status(json!({ "sub": "a", "exp": now() - 120 })).await, 401);
    assert_eq!(
        status(json!({ "sub": "a", "exp": now() + 600, "nbf": now() + 120 })).await,
        401
    );
    app.stop().await;

    let strict = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.jwt_leeway_s = 0;
    })
    .await;
    let token = hs256(json!({ "sub": "a", "exp": now() - 10 }));
    assert_eq!(upgrade_status(&strict, &token, None).await, 401);
    strict.stop().await;
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Writes `contents` to `path` the way configuration tools do: a new file renamed over the old.
fn replace_file(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_jwks_file_is_picked_up_while_the_gateway_runs() {
    let dir = std::env::temp_dir().join(format!("vc-jwks-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::copy(fixture("jwks.json"), &jwks).unwrap();
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.jwks_file = Some(jwks.clone());
        gateway.jwks_reload_s = 0.05;
    })
    .await;

    let rsa =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap();
    let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap();
    let sign = |algorithm, key: &EncodingKey, kid: &str| {
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &json!({ "sub": "carol", "exp": now() + 600 }), key).unwrap()
    };
    let old = sign(Algorithm::RS256, &rsa, "test-rsa-1");
    let new = sign(Algorithm::ES256, &ec, "rotated-ec-2");
    assert_eq!(upgrade_status(&app, &old, None).await, 101);
    assert_eq!(upgrade_status(&app, &new, None).await, 401);

    // The identity provider rotates: the file now holds only the new EC key.
    let mut jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("rotated-ec-2".into());
    let rotated = JwkSet { keys: vec![jwk] };
    let reloads_before =
        gateway_metric(&app, "videochat_gateway_jwks_reloads_total{result=\"ok\"}").await;
    replace_file(&jwks, &serde_json::to_string(&rotated).unwrap());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while upgrade_status(&app, &new, None).await != 101 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new key was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        upgrade_status(&app, &old, None).await,
        401,
        "old key retired"
    );
    assert!(
        gateway_metric(&app, "videochat_gateway_jwks_reloads_total{result=\"ok\"}").await
            > reloads_before
    );

    // A broken rewrite keeps the keys in use (and is counted), rather than locking everyone out.
    let errors = "videochat_gateway_jwks_reloads_total{result=\"error\"}";
    let errors_before = gateway_metric(&app, errors).await;
    replace_file(&jwks, "{\"keys\": [");
    while gateway_metric(&app, errors).await <= errors_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken file was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upgrade_status(&app, &new, None).await, 101);
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Origins

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_browser_origins_may_upgrade_and_non_browsers_always_may() {
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.allowed_origins = vec![
            "https://app.example.test".into(),
            "http://localhost:3000".into(),
        ];
    })
    .await;
    let token = |user: &str| TestApp::token(user);
    assert_eq!(
        upgrade_status(&app, &token("alice"), Some("https://app.example.test")).await,
        101
    );
    assert_eq!(
        upgrade_status(&app, &token("alice"), Some("http://localhost:3000")).await,
        101
    );
    assert_eq!(upgrade_status(&app, &token("alice"), None).await, 101);
    let before = gateway_metric(&app, &limit_series("origin")).await;
    for origin in [
        "https://evil.example.test",
        "http://app.example.test",
        "https://app.example.test.evil.test",
        "null",
    ] {
        assert_eq!(
            upgrade_status(&app, &token("mallory"), Some(origin)).await,
            403,
            "{origin}"
        );
    }
    assert!(gateway_metric(&app, &limit_series("origin")).await >= before + 4.0);
    never_known(&app, "mallory").await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Connections that never finish their upgrade

/// Opens a TCP connection and sends the start of a request, then nothing more.
async fn stalled(addr: SocketAddr, partial: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(partial).await.unwrap();
    stream
}

/// Reads until the server closes the connection; returns what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server held the connection open");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upgrades_are_closed_after_the_header_timeout_while_others_connect() {
    let timeout = Duration::from_millis(1500);
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.header_read_timeout_s = timeout.as_secs_f64();
        gateway.max_pending_upgrades = 64;
    })
    .await;
    let before = gateway_metric(&app, &limit_series("header_read_timeout")).await;
    let opened = Instant::now();
    let mut stalled_connections = Vec::new();
    for i in 0..40 {
        let partial: &[u8] = match i % 4 {
            0 => b"GET /ws HTT",
            1 => b"GET /ws?access_token=abc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",
            2 => b"G",
            _ => b"",
        };
        stalled_connections.push(stalled(app.bound.ws, partial).await);
    }
    // Meanwhile a normal client connects and is served.
    let mut alice = app.connect("alice").await;
    refused(&mut alice, REQUEST, json!({ "targetUser": "nobody" }), 1021).await;
    assert!(opened.elapsed() < timeout, "the test machine is too slow");

    // The first one opened is the first due; it must not go before its time.
    until_closed(&mut stalled_connections[0]).await;
    let closed_after = opened.elapsed();
    assert!(
        closed_after >= timeout.mul_f64(0.9),
        "closed after {closed_after:?}, before the timeout"
    );
    for stream in &mut stalled_connections[1..] {
        until_closed(stream).await;
    }
    assert!(gateway_metric(&app, &limit_series("header_read_timeout")).await >= before + 40.0);
    // The socket that did upgrade is not subject to the header timeout.
    refused(&mut alice, REQUEST, json!({ "targetUser": "nobody" }), 1021).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_refused_with_431() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut stream = TcpStream::connect(app.bound.ws).await.unwrap();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
        "x".repeat(100 * 1024)
    );
    // The server may stop reading before the whole head is written.
    let _ = stream.write_all(head.as_bytes()).await;
    let answer = String::from_utf8_lossy(&until_closed(&mut stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A real client with a long (but plausible) token still gets in.
    let mut alice = app.connect("alice").await;
    refused(&mut alice, REQUEST, json!({ "targetUser": "nobody" }), 1021).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pending_upgrade_cap_turns_extra_connections_away_at_once() {
    let timeout = Duration::from_secs(2);
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.header_read_timeout_s = timeout.as_secs_f64();
        gateway.max_pending_upgrades = 3;
    })
    .await;
    let before = gateway_metric(&app, &limit_series("pending_upgrades")).await;
    let opened = Instant::now();
    let mut holding = Vec::new();
    for _ in 0..3 {
        holding.push(stalled(app.bound.ws, b"GET /ws HTT").await);
    }
    // Over the cap: answered 503 and closed at once, long before any timeout. (Should a
    // permit of an earlier connection still be on its way back, one extra is admitted instead
    // and waits like the others.)
    let mut turned_away = 0;
    for _ in 0..3 {
        let mut extra = TcpStream::connect(app.bound.ws).await.unwrap();
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_millis(500), extra.read_to_end(&mut answer)).await;
        match read {
            Ok(_) if answer.starts_with(b"HTTP/1.1 503") => turned_away += 1,
            Ok(_) => panic!("unexpected answer {}", String::from_utf8_lossy(&answer)),
            Err(_) => holding.push(extra),
        }
    }
    assert!(turned_away >= 2, "extra connections were not refused");
    assert!(opened.elapsed() < timeout, "refusal waited for the timeout");

    // Once the stalled ones time out, the permits are free again for real clients.
    for stream in &mut holding {
        until_closed(stream).await;
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while upgrade_status(&app, &TestApp::token("alice"), None).await != 101 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never admitted again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (Read only now: /metrics is served on the same port, behind the same cap.)
    assert!(gateway_metric(&app, &limit_series("pending_upgrades")).await >= before + 2.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_the_socket_cap_gets_429_and_leaves_no_presence() {
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.max_sockets_per_user = 2;
    })
    .await;
    let mut first = app.connect("alice").await;
    let mut second = app.connect("alice").await;
    assert_eq!(
        upgrade_status(&app, &TestApp::token("alice"), None).await,
        429
    );
    // Other users are not affected.
    let mut bob = app.connect("bob").await;
    let id = ring(&mut bob, &mut first).await;
    assert_eq!(
        second.event(REQUESTED).await["data"]["videochatRequestId"],
        id
    );
    ok(&bob
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": id }),
        )
        .await);
    // Closing one frees a place.
    second.close().await;
    let third = app.connect("alice").await;
    // With alice's sockets gone, nothing of the refused one remains: she is unavailable.
    first.close().await;
    third.close().await;
    refused(&mut bob, REQUEST, json!({ "targetUser": "alice" }), 10011).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// RFC 6455 close codes

/// A socket upgraded by hand, to write frames a WebSocket library would refuse to send.
struct RawSocket {
    stream: TcpStream,
}

impl RawSocket {
    async fn open(app: &TestApp, user: &str) -> Self {
        let mut stream = TcpStream::connect(app.bound.ws).await.unwrap();
        let request = format!(
            "GET /ws?access_token={} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            TestApp::token(user),
            app.bound.ws
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self { stream }
    }

    /// One frame: FIN, RSV1 and opcode as given, masked unless `masked` is false.
    async fn send(&mut self, fin: bool, rsv1: bool, opcode: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn send_text(&mut self, text: &[u8]) {
        self.send(true, false, 0x1, text, true).await;
    }

    /// The next frame from the server (never masked): opcode and payload; `None` at EOF.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let read = async {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await.ok()?;
            let len = match head[1] & 0x7f {
                126 => {
                    let mut n = [0u8; 2];
                    self.stream.read_exact(&mut n).await.ok()?;
                    u16::from_be_bytes(n) as usize
                }
                127 => {
                    let mut n = [0u8; 8];
                    self.stream.read_exact(&mut n).await.ok()?;
                    u64::from_be_bytes(n) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await.ok()?;
            Some((head[0] & 0x0f, payload))
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .expect("the server neither answered nor closed")
    }

    /// Reads until the server's close frame; returns its code (`None`: TCP dropped instead).
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next_frame().await? {
                (0x8, payload) if payload.len() >= 2 => {
                    return Some(u16::from_be_bytes([payload[0], payload[1]]));
                }
                (0x8, _) => return Some(1005),
                _ => continue,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_closes_with_1007_and_changes_nothing() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut bob = app.connect("bob").await;

    // The raw client is a real client first: a well-formed frame is answered.
    let mut alice = RawSocket::open(&app, "alice").await;
    let frame =
        json!({ "type": REQUEST, "data": { "targetUser": "nobody" }, "event": { "id": "raw-1" } });
    alice.send_text(frame.to_string().as_bytes()).await;
    let (opcode, answer) = alice.next_frame().await.unwrap();
    assert_eq!(opcode, 0x1);
    err(&serde_json::from_slice(&answer).unwrap(), 1021);

    // A request to bob whose bytes are not UTF-8: closed with 1007, not a dropped connection.
    let mut bad = br#"{"type":"videochat:requestDirectVideochat","data":{"targetUser":"bob"},"event":{"id":"x"}}"#.to_vec();
    bad.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    alice.send_text(&bad).await;
    assert_eq!(alice.close_code().await, Some(1007));

    // Nothing happened: bob was not rung, and alice's presence is gone.
    bob.no_event(REQUESTED, Duration::from_millis(200)).await;
    refused(&mut bob, REQUEST, json!({ "targetUser": "alice" }), 10011).await;

    // The same inside a fragmented message (valid start, invalid continuation).
    let mut carol = RawSocket::open(&app, "carol").await;
    carol.send(false, false, 0x1, b"{\"type\":\"vi", true).await;
    carol
        .send(true, false, 0x0, &[0xed, 0xa0, 0x80], true)
        .await;
    assert_eq!(carol.close_code().await, Some(1007));
    // And in the reason of a close frame.
    let mut dave = RawSocket::open(&app, "dave").await;
    dave.send(true, false, 0x8, &[0x03, 0xe8, 0xff, 0xfe], true)
        .await;
    assert_eq!(dave.close_code().await, Some(1007));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_violations_close_with_1002() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let before = gateway_metric(&app, "videochat_gateway_closes_total{code=\"1002\"}").await;
    let text = br#"{"type":"videochat:requestDirectVideochat","data":{"targetUser":"bob"},"event":{"id":"v"}}"#;
    let mut violations = 0.0;
    for case in 0..8 {
        let mut socket = RawSocket::open(&app, "alice").await;
        let name = match case {
            0 => {
                socket.send(true, false, 0x1, text, false).await;
                "unmasked frame"
            }
            1 => {
                socket.send(true, true, 0x1, text, true).await;
                "reserved bit without an extension"
            }
            2 => {
                socket.send(true, false, 0x3, text, true).await;
                "reserved data opcode"
            }
            3 => {
                socket.send(true, false, 0xb, b"", true).await;
                "reserved control opcode"
            }
            4 => {
                socket.send(false, false, 0x9, b"ping", true).await;
                "fragmented control frame"
            }
            5 => {
                socket.send(true, false, 0x9, &[b'p'; 126], true).await;
                "control frame over 125 bytes"
            }
            6 => {
                socket.send(true, false, 0x0, text, true).await;
                "continuation without a start"
            }
            _ => {
                socket.send(false, false, 0x1, b"{", true).await;
                socket.send(true, false, 0x1, b"}", true).await;
                "new message inside a fragmented one"
            }
        };
        assert_eq!(socket.close_code().await, Some(1002), "{name}");
        violations += 1.0;
    }
    assert!(
        gateway_metric(&app, "videochat_gateway_closes_total{code=\"1002\"}").await
            >= before + violations
    );
    // A close frame with a code nobody may send, or a one-byte payload, is answered with 1002.
    let mut socket = RawSocket::open(&app, "alice").await;
    socket
        .send(true, false, 0x8, &1005u16.to_be_bytes(), true)
        .await;
    assert_eq!(socket.close_code().await, Some(1002), "close code 1005");
    let mut socket = RawSocket::open(&app, "alice").await;
    socket.send(true, false, 0x8, &[0x03], true).await;
    assert_eq!(
        socket.close_code().await,
        Some(1002),
        "one-byte close payload"
    );

    // None of it rang anybody or left alice present.
    let mut bob = app.connect("bob").await;
    bob.no_event(REQUESTED, Duration::from_millis(200)).await;
    refused(&mut bob, REQUEST, json!({ "targetUser": "alice" }), 10011).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_hard_limit_closes_with_1009_even_mid_stream() {
    let app = TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.max_message_bytes = 64 * 1024;
    })
    .await;
    let before = gateway_metric(&app, &limit_series("message_size")).await;
    // Declared larger than the limit, followed by more bytes than the server will read: the
    // close frame still arrives (the server reads out the rest rather than resetting).
    let mut socket = RawSocket::open(&app, "alice").await;
    socket
        .send(true, false, 0x1, &vec![b'x'; 256 * 1024], true)
        .await;
    assert_eq!(socket.close_code().await, Some(1009));
    // A fragmented message that grows past the limit.
    let mut socket = RawSocket::open(&app, "alice").await;
    socket
        .send(false, false, 0x1, &[b'x'; 30 * 1024], true)
        .await;
    for _ in 0..3 {
        socket
            .send(false, false, 0x0, &[b'x'; 30 * 1024], true)
            .await;
    }
    assert_eq!(socket.close_code().await, Some(1009));
    assert!(gateway_metric(&app, &limit_series("message_size")).await >= before + 2.0);
    app.stop().await;
}
