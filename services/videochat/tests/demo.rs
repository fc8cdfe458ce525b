//! The browser demo's HTTP side (gateway/src/demo.rs): served only with the development
//! secret; its token endpoint signs the profile it is given, which reaches other users through
//! the just-in-time profile update; its online list names the sockets on this gateway.

mod common;

use common::*;
use serde_json::{Value, json};
use videochat_gateway::config::DEV_JWT_SECRET;

/// One HTTP/1.1 request over a TCP socket; returns status, headers (lower-case names) and body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response))
        .await
        .expect("answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn dev_app() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |gateway, _| {
        gateway.jwt_secret = DEV_JWT_SECRET.into();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_is_absent_unless_the_development_secret_is_in_use() {
    let app = TestApp::spawn(Backend::Sqlite).await; // a secret of its own
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/index.html"),
        ("GET", "/demo/app.js"),
        ("GET", "/demo/style.css"),
        ("GET", "/demo/online"),
        ("POST", "/demo/token"),
    ] {
        let body = (method == "POST").then_some(r#"{"userId":"mallory"}"#);
        let (status, _, _) = http(app.bound.ws, method, path, body).await;
        assert_eq!(
            status, 404,
            "{method} {path} must not exist with a real secret"
        );
    }
    // The rest of the gateway is unchanged.
    assert_eq!(http(app.bound.ws, "GET", "/healthz", None).await.0, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_and_its_files_are_served_with_the_development_secret() {
    let app = dev_app().await;
    let (status, headers, page) = http(app.bound.ws, "GET", "/", None).await;
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        header(&headers, "content-security-policy")
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(page.contains("anyone can sign in as anyone"), "{page}");
    assert!(page.contains(r#"src="/demo/app.js""#));
    let (status, headers, script) = http(app.bound.ws, "GET", "/demo/app.js", None).await;
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(script.contains("videochat:requestDirectVideochat"));
    let (status, headers, _) = http(app.bound.ws, "GET", "/demo/style.css", None).await;
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(http(app.bound.ws, "GET", "/demo/nope", None).await.0, 404);
    assert_eq!(http(app.bound.ws, "GET", "/demo/token", None).await.0, 405);
    assert_eq!(http(app.bound.ws, "POST", "/", Some("{}")).await.0, 405);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_token_carries_the_profile_that_other_users_then_see() {
    let app = dev_app().await;
    let avatar = "https://example.com/alice.png";
    let (status, _, body) = http(
        app.bound.ws,
        "POST",
        "/demo/token",
        Some(
            &json!({ "userId": "alice", "firstName": "Alice", "lastName": "Liddell", "avatar": avatar })
                .to_string(),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["userId"], "alice");
    assert_eq!(answer["developmentMode"], true);
    assert!(
        answer["warning"]
            .as_str()
            .unwrap()
            .contains("anyone can sign in as anyone")
    );
    let token = answer["token"].as_str().unwrap();

    // The token opens a socket, and its claims become alice's profile: bob sees them when she
    // rings.
    let mut alice = Client::connect(&app.ws_url(), "alice", token).await;
    let bob_token =
        videochat_gateway::auth::sign_dev_token(DEV_JWT_SECRET, "bob", Some("Bob"), 60).unwrap();
    let mut bob = Client::connect(&app.ws_url(), "bob", &bob_token).await;
    let response = alice
        .request(
            "videochat:requestDirectVideochat",
            json!({ "targetUser": "bob" }),
        )
        .await;
    ok(&response);
    let ringing = bob.event(REQUESTED).await;
    let caller = &ringing["data"]["user"];
    assert_eq!(caller["id"], "alice");
    assert_eq!(caller["firstName"], "Alice");
    assert_eq!(caller["lastName"], "Liddell");
    assert_eq!(caller["avatar"], avatar);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_refuses_bad_input() {
    let app = dev_app().await;
    for body in [
        "not json",
        r#"{"firstName":"no user id"}"#,
        r#"{"userId":""}"#,
        &json!({ "userId": "x".repeat(129) }).to_string(),
        &json!({ "userId": "alice", "avatar": "x".repeat(2000) }).to_string(),
    ] {
        let (status, _, answer) = http(app.bound.ws, "POST", "/demo/token", Some(body)).await;
        assert_eq!(status, 400, "{body} → {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let (status, _, _) = http(
        app.bound.ws,
        "POST",
        "/demo/token",
        Some(&format!(r#"{{"userId":"{}"}}"#, "x".repeat(9000))),
    )
    .await;
    assert_eq!(status, 413, "a body over the limit is not read");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_online_list_names_the_users_with_sockets_on_this_gateway() {
    let app = dev_app().await;
    let addr = app.bound.ws;
    let online = move || async move {
        let (status, _, body) = http(addr, "GET", "/demo/online", None).await;
        assert_eq!(status, 200);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["scope"], "sockets on this gateway only");
        body["users"].clone()
    };
    assert_eq!(online().await, json!([]));
    let token = |user: &str| {
        videochat_gateway::auth::sign_dev_token(DEV_JWT_SECRET, user, None, 60).unwrap()
    };
    let bob = Client::connect(&app.ws_url(), "bob", &token("bob")).await;
    let alice_phone = Client::connect(&app.ws_url(), "alice", &token("alice")).await;
    let alice_laptop = Client::connect(&app.ws_url(), "alice", &token("alice")).await;
    // A socket is registered before its upgrade completes, so the list is current at once.
    assert_eq!(
        online().await,
        json!([{ "userId": "alice", "sockets": 2 }, { "userId": "bob", "sockets": 1 }])
    );
    // Closing waits for the server's close, which comes after the socket left the registry.
    bob.close().await;
    alice_phone.close().await;
    assert_eq!(online().await, json!([{ "userId": "alice", "sockets": 1 }]));
    alice_laptop.close().await;
    app.stop().await;
}
