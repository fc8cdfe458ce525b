//! Webhooks out, end to end: the real stack sends call-status and push webhooks to a real HTTP
//! endpoint written in Python (`tests/webhooks/receiver.py`), which verifies every signature
//! with the Standard Webhooks library from PyPI — code we did not write. Each behaviour on SQLite
//! and Postgres.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use videochat_gateway::GatewayConfig;
use videochat_handshake::HandshakeConfig;
use videochat_proto::v1 as pb;
use videochat_proto::v1::webhook_deliveries_client::WebhookDeliveriesClient;

/// The webhook secret of the tests, in Standard Webhooks form.
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The Python receiver, as a child process (killed when dropped).
struct Receiver {
    port: u16,
    _child: tokio::process::Child,
}

impl Receiver {
    /// Starts a receiver on `port` (0: any free port).
    async fn start(port: u16) -> Self {
        let (python, dir) = python_venv("webhooks");
        let mut child = tokio::process::Command::new(python)
            .arg(dir.join("receiver.py"))
            .arg(WEBHOOK_SECRET)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python receiver starts");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        tokio::time::timeout(DEADLINE, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("the receiver says its port")
            .unwrap();
        let port = line.trim().parse().expect("a port number");
        Self {
            port,
            _child: child,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every attempt recorded so far.
    async fn received(&self) -> Vec<Value> {
        let (status, body) = http_get(self.addr(), "/received")
            .await
            .expect("receiver up");
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// Every later delivery is answered `status`.
    async fn answer(&self, status: u16) {
        let body = json!({ "status": status }).to_string();
        let mut stream = TcpStream::connect(self.addr()).await.unwrap();
        let request = format!(
            "POST /control HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    }

    /// Waits until what was received satisfies `done` (within `within`); returns it.
    async fn until(&self, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let received = self.received().await;
            if done(&received) {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver never got what was expected; it got {received:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Deliveries answered 2xx, by type.
fn delivered(received: &[Value]) -> Vec<&Value> {
    received.iter().filter(|r| r["answered"] == 200).collect()
}

fn of_type<'a>(received: &'a [Value], event: &str, request: &Value) -> Vec<&'a Value> {
    delivered(received)
        .into_iter()
        .filter(|r| {
            r["payload"]["type"] == event && r["payload"]["data"]["videochatRequestId"] == *request
        })
        .collect()
}

/// Webhooks on, retrying fast.
fn webhooks(handshake: &mut HandshakeConfig, call: Option<String>, push: Option<String>) {
    let w = &mut handshake.webhooks;
    w.webhook_url = call.into_iter().collect();
    w.push_webhook_url = push;
    w.webhook_secret = Some(WEBHOOK_SECRET.to_owned().into());
    w.webhook_backoff_min_ms = 50;
    w.webhook_backoff_max_ms = 200;
    w.webhook_poll_ms = 100;
}

async fn spawn(
    backend: Backend,
    adjust: impl FnOnce(&mut GatewayConfig, &mut HandshakeConfig),
) -> TestApp {
    TestApp::spawn_with(backend, adjust).await
}

async fn admin(app: &TestApp) -> WebhookDeliveriesClient<GrpcChannel> {
    WebhookDeliveriesClient::new(app.grpc_as(Some(SERVICE_TOKEN)).await)
}

/// The failed deliveries `ListFailedDeliveries` lists, once there are `count` of them.
async fn failed_once(
    admin: &mut WebhookDeliveriesClient<GrpcChannel>,
    count: usize,
) -> Vec<pb::WebhookDelivery> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let failed = admin
            .list_failed_deliveries(pb::ListFailedDeliveriesRequest { limit: 0 })
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        if failed.len() >= count {
            return failed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {count} failed: {failed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every call-status event — of a direct call, an invite, a merge, a decline, a cancel and a
/// timeout — arrives once, signed so that the reference library verifies it, naming the ring,
/// the videochat, both users, the reason and the times.
async fn every_call_status_event_arrives_signed(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let url = receiver.url("/calls");
    let app = spawn(backend, |_, h| {
        webhooks(h, Some(url), None);
        h.ring_timeout_s = 2.0;
    })
    .await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;
    let mut dave = app.connect("dave").await;

    // A direct call, accepted.
    let direct = ring(&mut alice, &mut bob).await;
    let (for_bob, _) = accept(&mut alice, &mut bob, &direct).await;
    let videochat = for_bob["videochatId"].clone();
    // An invite into it, accepted.
    let invite = ok(&alice
        .request(
            "videochat:invite",
            json!({ "targetUser": "carol", "videochatId": videochat }),
        )
        .await)["videochatRequestId"]
        .clone();
    carol.event(REQUESTED).await;
    ok(&carol
        .request(
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": invite }),
        )
        .await);
    // Dave calls bob, who merges him into the videochat he is in.
    let merged = ring(&mut dave, &mut bob).await;
    ok(&bob
        .request(
            "videochat:mergeToVideochat",
            json!({ "videochatId": videochat, "videochatRequestId": merged }),
        )
        .await);
    // A call declined, a call cancelled.
    let declined = ring(&mut alice, &mut dave).await;
    ok(&dave
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": declined }),
        )
        .await);
    let cancelled = ring(&mut carol, &mut dave).await;
    ok(&carol
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": cancelled }),
        )
        .await);
    // And one nobody answers.
    // Its timeout (2 s) ends it: the receiver waits for that below.
    let missed = ring(&mut dave, &mut carol).await;

    let expected: Vec<(&str, &Value, &str, &str)> = vec![
        ("call.requested", &direct, "alice", "bob"),
        ("call.accepted", &direct, "alice", "bob"),
        ("call.invited", &invite, "alice", "carol"),
        ("call.accepted", &invite, "alice", "carol"),
        ("call.requested", &merged, "dave", "bob"),
        ("call.merged", &merged, "dave", "bob"),
        ("call.requested", &declined, "alice", "dave"),
        ("call.declined", &declined, "alice", "dave"),
        ("call.requested", &cancelled, "carol", "dave"),
        ("call.cancelled", &cancelled, "carol", "dave"),
        ("call.requested", &missed, "dave", "carol"),
        ("call.missed", &missed, "dave", "carol"),
    ];
    let received = receiver
        .until(DEADLINE, |r| {
            expected
                .iter()
                .all(|(event, request, _, _)| !of_type(r, event, request).is_empty())
        })
        .await;
    assert!(
        received.iter().all(|r| r["verified"] == true),
        "every signature verifies: {received:#?}"
    );
    let ids: BTreeSet<_> = received.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids.len(),
        received.len(),
        "each message once: {received:#?}"
    );
    assert!(ids.iter().all(|id| id.starts_with("msg_")));
    assert_eq!(
        received.len(),
        expected.len(),
        "nothing else: {received:#?}"
    );
    for (event, request, initiator, target) in &expected {
        let hits = of_type(&received, event, request);
        assert_eq!(hits.len(), 1, "{event} {request}");
        let body = &hits[0]["payload"];
        let data = &body["data"];
        assert_eq!(data["initiator"]["id"], *initiator, "{body}");
        assert_eq!(data["target"]["id"], *target, "{body}");
        assert!(
            body["timestamp"].as_i64().unwrap() > 1_700_000_000_000,
            "{body}"
        );
        assert!(data["createdAt"].as_i64().unwrap() <= body["timestamp"].as_i64().unwrap());
        assert!(data["expiresAt"].as_i64().unwrap() > data["createdAt"].as_i64().unwrap());
        let reason = match *event {
            "call.accepted" => Some("accepted"),
            "call.declined" => Some("declined"),
            "call.cancelled" => Some("cancelled"),
            "call.missed" => Some("timeout"),
            "call.merged" => Some("merged"),
            _ => None,
        };
        assert_eq!(data["reason"].as_str(), reason, "{body}");
        if reason.is_some() {
            assert_eq!(data["endedAt"], body["timestamp"], "{body}");
        }
        // The videochat is named wherever there is one.
        let in_videochat = **request == invite || matches!(*event, "call.accepted" | "call.merged");
        if in_videochat {
            assert_eq!(data["videochatId"], videochat, "{body}");
        } else {
            assert!(data.get("videochatId").is_none(), "{body}");
        }
    }
    // User Simple, with the profile from the token.
    let first = &of_type(&received, "call.requested", &direct)[0]["payload"]["data"];
    assert_eq!(first["initiator"]["firstName"], "alice");
    assert_eq!(first["kind"], "direct");
    app.stop().await;
}

/// An endpoint that fails for a while and then recovers gets every event, each under one
/// `webhook-id` on every attempt, with the same body.
async fn a_failing_endpoint_gets_every_event_once_it_recovers(backend: Backend) {
    let receiver = Receiver::start(0).await;
    receiver.answer(500).await;
    let url = receiver.url("/calls");
    let app = spawn(backend, |_, h| webhooks(h, Some(url), None)).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let request = ring(&mut alice, &mut bob).await;
    ok(&bob
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": request }),
        )
        .await);
    // Each event refused at least twice.
    let refused = receiver
        .until(DEADLINE, |r| {
            ["call.requested", "call.declined"].iter().all(|event| {
                r.iter()
                    .filter(|x| x["answered"] == 500 && x["payload"]["type"] == *event)
                    .count()
                    >= 2
            })
        })
        .await;
    receiver.answer(200).await;
    let received = receiver
        .until(DEADLINE, |r| {
            !of_type(r, "call.requested", &request).is_empty()
                && !of_type(r, "call.declined", &request).is_empty()
        })
        .await;
    assert!(received.iter().all(|r| r["verified"] == true));
    let mut attempts: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for r in &received {
        attempts
            .entry(r["id"].as_str().unwrap())
            .or_default()
            .push(r);
    }
    assert_eq!(
        attempts.len(),
        2,
        "two messages, however many attempts: {received:#?}"
    );
    for (id, tries) in &attempts {
        assert!(tries.len() >= 3, "{id}: refused twice, then delivered");
        assert!(
            tries.iter().all(|t| t["payload"] == tries[0]["payload"]),
            "{id}: same body"
        );
        assert_eq!(tries.last().unwrap()["answered"], 200, "{id}");
        assert_eq!(
            tries.iter().filter(|t| t["answered"] == 200).count(),
            1,
            "{id}: delivered once"
        );
    }
    // The refused attempts carried the same ids as the delivered ones.
    for r in &refused {
        assert!(attempts.contains_key(r["id"].as_str().unwrap()));
    }
    // Delivered rows leave the outbox once their 2xx is recorded.
    let started = tokio::time::Instant::now();
    while outbox_rows(&app).await != 0 {
        assert!(
            started.elapsed() < DEADLINE,
            "delivered rows stay in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

/// Rows in the webhook outbox, read from the app's database.
async fn outbox_rows(app: &TestApp) -> i64 {
    use sqlx::Connection as _;
    const COUNT: &str = "SELECT COUNT(*) FROM webhook_deliveries";
    if app.db.url.starts_with("postgres") {
        let mut connection = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
        sqlx::query_scalar(COUNT)
            .fetch_one(&mut connection)
            .await
            .unwrap()
    } else {
        let mut connection = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
        sqlx::query_scalar(COUNT)
            .fetch_one(&mut connection)
            .await
            .unwrap()
    }
}

/// Reads a counter's value from the service's `/metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let (_, body) = http_get(app.bound.metrics, "/metrics").await.unwrap();
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The endpoint is down while the service runs and is stopped; once both are back, everything
/// written before the restart is delivered.
async fn deliveries_survive_a_dead_endpoint_and_a_service_restart(backend: Backend) {
    let port = common::process::free_port().await.port();
    let url = format!("http://127.0.0.1:{port}/calls");
    let first_url = url.clone();
    let mut app = spawn(backend, |_, h| webhooks(h, Some(first_url), None)).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let request = ring(&mut alice, &mut bob).await;
    ok(&alice
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": request }),
        )
        .await);
    // Both were tried against the dead endpoint.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while metric(&app, "videochat_webhook_attempt_errors_total").await < 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed attempt seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice.close().await;
    bob.close().await;
    let db = app.db.take();
    app.stop().await;

    let receiver = Receiver::start(port).await;
    let app = TestApp::spawn_on(db, |_, h| webhooks(h, Some(url), None)).await;
    let received = receiver
        .until(DEADLINE, |r| {
            !of_type(r, "call.requested", &request).is_empty()
                && !of_type(r, "call.cancelled", &request).is_empty()
        })
        .await;
    assert!(received.iter().all(|r| r["verified"] == true));
    app.stop().await;
}

/// Waits (past a lease) for `request`'s `call.requested` to be delivered; it must be delivered
/// once, signed so that the reference library verifies it. Returns it.
async fn requested_once_after_a_lease(receiver: &Receiver, request: &Value) -> Value {
    let received = receiver
        .until(DEADLINE * 2, |r| {
            !of_type(r, "call.requested", request).is_empty()
        })
        .await;
    let sent = of_type(&received, "call.requested", request);
    assert_eq!(sent.len(), 1, "delivered once: {received:#?}");
    assert!(sent[0]["verified"] == true);
    sent[0].clone()
}

/// An endpoint that reads requests and never answers: an attempt at it runs until its timeout.
/// Dropped, it closes the port.
struct Silent {
    task: tokio::task::JoinHandle<()>,
    /// How many requests have arrived (their first bytes read).
    requests: tokio::sync::watch::Receiver<usize>,
}

impl Silent {
    async fn on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let (arrived, requests) = tokio::sync::watch::channel(0);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut start = [0u8; 64];
                if matches!(stream.read(&mut start).await, Ok(n) if n > 0) {
                    arrived.send_modify(|n| *n += 1);
                }
                held.push(stream);
            }
        });
        Self { task, requests }
    }

    /// Waits until a request has arrived.
    async fn until_a_request(&mut self) {
        tokio::time::timeout(DEADLINE, self.requests.wait_for(|n| *n > 0))
            .await
            .expect("no attempt reached the endpoint")
            .unwrap();
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A replica that stops while its first attempts are still running leaves them unrecorded (on
/// Postgres, its batch's group; on SQLite, claimed rows). Once their lease runs out, the next
/// replica sends them — the same `webhook-id` the stopped one tried.
async fn deliveries_whose_attempts_a_stopping_replica_abandoned_are_sent_after_their_lease(
    backend: Backend,
) {
    let port = common::process::free_port().await.port();
    let url = format!("http://127.0.0.1:{port}/calls");
    let mut silent = Silent::on(port).await;
    // Attempts outlast shutdown's 2 s drain; the lease is the timeout plus 5 s.
    let slow = |h: &mut HandshakeConfig, url: String| {
        webhooks(h, Some(url), None);
        h.webhooks.webhook_timeout_ms = 3_000;
    };
    let first_url = url.clone();
    let mut app = spawn(backend, |_, h| slow(h, first_url)).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let request = ring(&mut alice, &mut bob).await;
    // The attempt is under way (its request reached the endpoint), and never answered.
    silent.until_a_request().await;
    alice.close().await;
    bob.close().await;
    let db = app.db.take();
    app.stop().await;
    drop(silent);

    let receiver = Receiver::start(port).await;
    let app = TestApp::spawn_on(db, |_, h| slow(h, url)).await;
    requested_once_after_a_lease(&receiver, &request).await;
    // Its delivery recorded: the row goes (outcomes are recorded in batches, within 20 ms).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while outbox_rows(&app).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivered row stays"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

/// An endpoint that never answers holds only its own attempt: the same event's delivery to
/// another endpoint, started with it, arrives at once, and the silent endpoint's attempt ends at
/// the timeout with an error that says so — here past the age limit too, so it is failed and
/// listed.
async fn an_endpoint_that_never_answers_times_out_alone(backend: Backend) {
    let port = common::process::free_port().await.port();
    let mut silent = Silent::on(port).await;
    let receiver = Receiver::start(0).await;
    let urls = vec![
        format!("http://127.0.0.1:{port}/calls"),
        receiver.url("/calls"),
    ];
    let timeout = Duration::from_millis(3_000);
    let app = spawn(backend, |_, h| {
        webhooks(h, None, None);
        h.webhooks.webhook_url = urls;
        h.webhooks.webhook_timeout_ms = timeout.as_millis() as u64;
        h.webhooks.webhook_max_age_s = 1;
    })
    .await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let started = tokio::time::Instant::now();
    let request = ring(&mut alice, &mut bob).await;
    receiver
        .until(DEADLINE, |r| {
            of_type(r, "call.requested", &request).len() == 1
        })
        .await;
    assert!(
        started.elapsed() < timeout,
        "the answered delivery waited for the silent one's deadline"
    );
    silent.until_a_request().await;

    let mut admin = admin(&app).await;
    let failed = failed_once(&mut admin, 1).await;
    assert!(started.elapsed() >= timeout, "ended before its timeout");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].event_type, "call.requested");
    assert_eq!(failed[0].endpoint, format!("http://127.0.0.1:{port}/calls"));
    assert!(
        failed[0].last_error.contains("no answer within 3s"),
        "{:?}",
        failed[0].last_error
    );
    assert_eq!(
        of_type(&receiver.received().await, "call.requested", &request).len(),
        1,
        "the answered delivery is not sent again"
    );
    app.stop().await;
}

/// A webhook that keeps failing past its age limit is marked failed, listed by
/// `ListFailedDeliveries`, and sent again — same id — by `RetryDeliveries`, by id or all.
async fn failed_deliveries_are_listed_and_sent_again(backend: Backend) {
    let receiver = Receiver::start(0).await;
    receiver.answer(500).await;
    let url = receiver.url("/calls");
    let app = spawn(backend, |_, h| {
        webhooks(h, Some(url), None);
        h.webhooks.webhook_max_age_s = 1;
    })
    .await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let request = ring(&mut alice, &mut bob).await;
    ok(&bob
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": request }),
        )
        .await);
    let mut admin = admin(&app).await;
    let failed = failed_once(&mut admin, 2).await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    let types: BTreeSet<_> = failed.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(types, BTreeSet::from(["call.requested", "call.declined"]));
    assert!(
        failed
            .iter()
            .all(|d| d.attempts >= 1 && d.last_error.contains("500"))
    );
    // Nothing more is tried once failed.
    let tried = receiver.received().await.len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        receiver.received().await.len(),
        tried,
        "a failed delivery rests"
    );

    receiver.answer(200).await;
    let first = &failed[0];
    let retried = admin
        .retry_deliveries(pb::RetryDeliveriesRequest {
            ids: vec![first.id.clone()],
            all_failed: false,
        })
        .await
        .unwrap()
        .into_inner()
        .retried;
    assert_eq!(retried, 1);
    let received = receiver
        .until(DEADLINE, |r| {
            delivered(r).iter().any(|x| x["id"] == first.id.as_str())
        })
        .await;
    assert_eq!(delivered(&received).len(), 1, "only the one retried");
    let retried = admin
        .retry_deliveries(pb::RetryDeliveriesRequest {
            ids: vec![],
            all_failed: true,
        })
        .await
        .unwrap()
        .into_inner()
        .retried;
    assert_eq!(retried, 1);
    let received = receiver.until(DEADLINE, |r| delivered(r).len() == 2).await;
    let ids: BTreeSet<_> = delivered(&received)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let failed_ids: BTreeSet<_> = failed.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids, failed_ids, "sent again under the same webhook-id");
    assert!(received.iter().all(|r| r["verified"] == true));
    let left = admin
        .list_failed_deliveries(pb::ListFailedDeliveriesRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert!(left.is_empty(), "{left:?}");
    // The admin service is for internal services only.
    let mut as_gateway = WebhookDeliveriesClient::new(app.grpc_as(Some(GATEWAY_TOKEN)).await);
    let refused = as_gateway
        .list_failed_deliveries(pb::ListFailedDeliveriesRequest { limit: 0 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    app.stop().await;
}

/// Waits until the service no longer counts `user` as available.
async fn until_unavailable(app: &TestApp, user: &str) {
    let mut users = app.users_client().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answer = users
            .get_user(pb::GetUserRequest {
                user_id: user.into(),
            })
            .await
            .unwrap()
            .into_inner();
        if !answer.available {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} stays available"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bob registers his phone and closes the app.
async fn bob_registers_and_leaves(app: &TestApp) {
    let mut bob = app.connect("bob").await;
    let answer = bob
        .request(
            "videochat:registerPushDevice",
            json!({ "platform": "apns", "token": "a1b2c3", "voip": true }),
        )
        .await;
    assert_eq!(ok(&answer), json!({}));
    bob.close().await;
    until_unavailable(app, "bob").await;
}

/// Bob's app is closed but his phone is registered: alice's call rings (she gets a request id),
/// the push sender is told within 100 ms, bob's app connects, is shown the ring, accepts, and the
/// push sender is told to stop ringing.
async fn an_offline_callee_with_a_device_is_rung_through_push(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let push = receiver.url("/push");
    let app = spawn(backend, |_, h| webhooks(h, None, Some(push))).await;
    bob_registers_and_leaves(&app).await;
    let mut alice = app.connect("alice").await;

    let answer = alice
        .request(
            "videochat:requestDirectVideochat",
            json!({ "targetUser": "bob" }),
        )
        .await;
    let answered_at = now_ms();
    let request = ok(&answer)["videochatRequestId"].clone();
    let received = receiver
        .until(DEADLINE, |r| !of_type(r, "push.ring", &request).is_empty())
        .await;
    let ring = of_type(&received, "push.ring", &request)[0];
    assert_eq!(ring["verified"], true);
    assert_eq!(ring["path"], "/push");
    let lag = ring["at_ms"].as_i64().unwrap() - answered_at;
    assert!(lag <= 100, "push.ring arrived {lag} ms after the answer");
    let data = &ring["payload"]["data"];
    assert_eq!(data["userId"], "bob");
    assert_eq!(data["caller"]["id"], "alice");
    assert_eq!(
        data["devices"],
        json!([{ "platform": "apns", "token": "a1b2c3", "voip": true }])
    );
    assert!(data["expiresAt"].as_i64().unwrap() > answered_at);

    // The app wakes, connects, is shown the ring, registers a second device meanwhile, and
    // accepts.
    let mut bob = app.connect("bob").await;
    let shown = bob.event(REQUESTED).await;
    assert_eq!(shown["data"]["videochatRequestId"], request);
    ok(&bob
        .request(
            "videochat:registerPushDevice",
            json!({ "platform": "fcm", "token": "later-device", "voip": false }),
        )
        .await);
    let (_, for_alice) = accept(&mut alice, &mut bob, &request).await;
    assert_eq!(for_alice["identity"], "alice");
    let received = receiver
        .until(DEADLINE, |r| {
            !of_type(r, "push.cancel", &request).is_empty()
        })
        .await;
    let cancel = &of_type(&received, "push.cancel", &request)[0]["payload"]["data"];
    assert_eq!(cancel["reason"], "accepted");
    assert_eq!(cancel["userId"], "bob");
    // Exactly the devices the ring woke: the one registered after it never rang.
    assert_eq!(cancel["devices"], data["devices"]);
    assert!(received.iter().all(|r| r["verified"] == true));
    app.stop().await;
}

/// A pushed ring the caller withdraws sends `push.cancel` naming the devices it woke; a ring
/// that was not pushed (bob online) sends none; a pushed ring nobody answers sends one when it
/// times out.
async fn a_cancelled_push_ring_sends_push_cancel(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let push = receiver.url("/push");
    let app = spawn(backend, |_, h| {
        webhooks(h, None, Some(push));
        h.ring_timeout_s = 2.0;
    })
    .await;
    bob_registers_and_leaves(&app).await;
    let mut alice = app.connect("alice").await;
    let request = ok(&alice
        .request(
            "videochat:requestDirectVideochat",
            json!({ "targetUser": "bob" }),
        )
        .await)["videochatRequestId"]
        .clone();
    ok(&alice
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": request }),
        )
        .await);
    let received = receiver
        .until(DEADLINE, |r| {
            !of_type(r, "push.cancel", &request).is_empty()
        })
        .await;
    let cancel = &of_type(&received, "push.cancel", &request)[0]["payload"]["data"];
    assert_eq!(cancel["reason"], "cancelled");
    assert_eq!(
        cancel["devices"],
        json!([{ "platform": "apns", "token": "a1b2c3", "voip": true }])
    );

    // Bob online: an ordinary ring, no push either way.
    let mut bob = app.connect("bob").await;
    // His app is first told what happened while it was closed.
    assert_eq!(
        bob.event(REQUESTED).await["data"]["videochatRequestId"],
        request
    );
    assert_eq!(
        bob.event(DECLINED).await["data"]["videochatRequestId"],
        request
    );
    let online = ring(&mut alice, &mut bob).await;
    ok(&alice
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": online }),
        )
        .await);
    // A later pushed ring's webhooks arrive after anything the online one could have sent.
    bob.close().await;
    until_unavailable(&app, "bob").await;
    let later = ok(&alice
        .request(
            "videochat:requestDirectVideochat",
            json!({ "targetUser": "bob" }),
        )
        .await)["videochatRequestId"]
        .clone();
    let received = receiver
        .until(DEADLINE, |r| !of_type(r, "push.ring", &later).is_empty())
        .await;
    assert!(
        received
            .iter()
            .all(|r| r["payload"]["data"]["videochatRequestId"] != online),
        "the online ring was not pushed: {received:#?}"
    );
    // Nobody answers it: its timeout cancels the devices it woke.
    let received = receiver
        .until(DEADLINE, |r| !of_type(r, "push.cancel", &later).is_empty())
        .await;
    let cancel = &of_type(&received, "push.cancel", &later)[0]["payload"]["data"];
    assert_eq!(cancel["reason"], "timeout");
    assert_eq!(
        cancel["devices"],
        of_type(&received, "push.ring", &later)[0]["payload"]["data"]["devices"]
    );
    assert!(received.iter().all(|r| r["verified"] == true));
    app.stop().await;
}

/// Without a registered device, or without the push setting, an offline user is 10011 exactly
/// as before; a device unregistered no longer rings.
async fn without_a_device_or_the_setting_an_offline_user_is_not_available(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let push = receiver.url("/push");
    let app = spawn(backend, |_, h| webhooks(h, None, Some(push))).await;
    // Carol exists but has no device.
    app.connect("carol").await.close().await;
    until_unavailable(&app, "carol").await;
    bob_registers_and_leaves(&app).await;
    let mut alice = app.connect("alice").await;
    refused(
        &mut alice,
        "videochat:requestDirectVideochat",
        json!({ "targetUser": "carol" }),
        10011,
    )
    .await;
    // Bob's device goes: 10011 for him too.
    let mut users = app.users_client().await;
    let removed = users
        .unregister_push_device(pb::UnregisterPushDeviceRequest {
            user_id: "bob".into(),
            token: "a1b2c3".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .removed;
    assert!(removed);
    refused(
        &mut alice,
        "videochat:requestDirectVideochat",
        json!({ "targetUser": "bob" }),
        10011,
    )
    .await;
    assert!(receiver.received().await.is_empty());
    app.stop().await;

    // A registered device without VIDEOCHAT_PUSH_WEBHOOK_URL changes nothing.
    let app = TestApp::spawn(backend).await;
    bob_registers_and_leaves(&app).await;
    let mut alice = app.connect("alice").await;
    refused(
        &mut alice,
        "videochat:requestDirectVideochat",
        json!({ "targetUser": "bob" }),
        10011,
    )
    .await;
    app.stop().await;
}

/// Bad register frames are refused with 1002 naming the field, and register nothing.
async fn bad_register_frames_are_refused_and_change_nothing(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let push = receiver.url("/push");
    let app = spawn(backend, |_, h| webhooks(h, None, Some(push))).await;
    let mut bob = app.connect("bob").await;
    let long = "x".repeat(4097);
    for (data, field) in [
        (
            json!({ "platform": "sms", "token": "t", "voip": true }),
            "data.platform",
        ),
        (json!({ "token": "t", "voip": true }), "data.platform"),
        (
            json!({ "platform": "fcm", "token": "", "voip": true }),
            "data.token",
        ),
        (
            json!({ "platform": "fcm", "token": long, "voip": true }),
            "data.token",
        ),
        (
            json!({ "platform": "fcm", "token": 5, "voip": true }),
            "data.token",
        ),
        (
            json!({ "platform": "fcm", "token": "t", "voip": "yes" }),
            "data.voip",
        ),
        (json!({ "platform": "fcm", "token": "t" }), "data.voip"),
    ] {
        let answer = bob
            .request("videochat:registerPushDevice", data.clone())
            .await;
        err(&answer, 1002);
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(field),
            "{data}: {answer}"
        );
    }
    let answer = bob
        .request("videochat:unregisterPushDevice", json!({ "token": "" }))
        .await;
    err(&answer, 1002);
    bob.close().await;
    until_unavailable(&app, "bob").await;
    let mut alice = app.connect("alice").await;
    refused(
        &mut alice,
        "videochat:requestDirectVideochat",
        json!({ "targetUser": "bob" }),
        10011,
    )
    .await;
    assert!(receiver.received().await.is_empty());
    app.stop().await;
}

/// Two replicas on one Postgres both dispatch (the second is woken by the first's commits through
/// the outbox notification): every delivery is sent once, none twice, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_outbox_without_sending_a_delivery_twice() {
    let receiver = Receiver::start(0).await;
    let url = receiver.url("/calls");
    let first_url = url.clone();
    let app = spawn(Backend::Postgres, |_, h| webhooks(h, Some(first_url), None)).await;
    // A second replica, no gateway: it only dispatches.
    let (_, mut config) = configs();
    config.database_url = app.db.url.clone();
    webhooks(&mut config, Some(url), None);
    let second = videochat_handshake::Replica::build(config)
        .await
        .expect("second replica starts");
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let task = tokio::spawn(second.run(
        videochat_handshake::Listeners {
            grpc: listener,
            metrics: None,
        },
        videochat::telemetry::prometheus(),
        stop.clone(),
    ));

    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    const CALLS: usize = 60;
    for _ in 0..CALLS {
        let request = ring(&mut alice, &mut bob).await;
        ok(&bob
            .request(
                "videochat:declineVideochatRequest",
                json!({ "videochatRequestId": request }),
            )
            .await);
        alice.event(DECLINED).await;
        bob.event(DECLINED).await;
    }
    let received = receiver.until(DEADLINE, |r| r.len() >= 2 * CALLS).await;
    // Anything sent twice would arrive within a moment of the first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = {
        let later = receiver.received().await;
        assert_eq!(later.len(), received.len(), "more than expected arrived");
        later
    };
    let ids: BTreeSet<_> = received.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids.len(),
        2 * CALLS,
        "each delivery exactly once: {received:#?}"
    );
    assert!(
        received
            .iter()
            .all(|r| r["verified"] == true && r["answered"] == 200)
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    app.stop().await;
}

/// With one attempt at a time and two endpoints, every commit hands the dispatcher more
/// deliveries than it has slots (the dispatcher starts those it has slots for and waits for the
/// rest): each event still reaches each endpoint exactly once, and every outcome is recorded
/// (the outbox empties).
async fn more_deliveries_than_slots_are_each_sent_once(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let endpoints = vec![receiver.url("/one"), receiver.url("/two")];
    let app = spawn(backend, |_, h| {
        webhooks(h, None, None);
        h.webhooks.webhook_url = endpoints;
        h.webhooks.webhook_concurrency = 1;
    })
    .await;
    let mut requests = Vec::new();
    for (caller, callee) in [("alice", "bob"), ("carol", "dave"), ("erin", "frank")] {
        let mut caller = app.connect(caller).await;
        let mut callee = app.connect(callee).await;
        let request = ring(&mut caller, &mut callee).await;
        accept(&mut caller, &mut callee, &request).await;
        requests.push(request);
    }
    let expected = requests.len() * 2 * 2;
    receiver
        .until(DEADLINE, |r| delivered(r).len() >= expected)
        .await;
    // Anything sent twice would have arrived by now too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = receiver.received().await;
    assert!(received.iter().all(|r| r["verified"] == true));
    assert_eq!(delivered(&received).len(), expected, "{received:#?}");
    for request in &requests {
        for event in ["call.requested", "call.accepted"] {
            let paths: BTreeSet<&str> = of_type(&received, event, request)
                .iter()
                .map(|r| r["path"].as_str().unwrap())
                .collect();
            assert_eq!(
                paths,
                BTreeSet::from(["/one", "/two"]),
                "{event} of {request}"
            );
            assert_eq!(
                of_type(&received, event, request).len(),
                2,
                "{event} of {request}"
            );
        }
    }
    let started = tokio::time::Instant::now();
    while outbox_rows(&app).await != 0 {
        assert!(started.elapsed() < DEADLINE, "outcomes were not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

on_both_backends!(
    every_call_status_event_arrives_signed,
    a_failing_endpoint_gets_every_event_once_it_recovers,
    deliveries_survive_a_dead_endpoint_and_a_service_restart,
    deliveries_whose_attempts_a_stopping_replica_abandoned_are_sent_after_their_lease,
    an_endpoint_that_never_answers_times_out_alone,
    failed_deliveries_are_listed_and_sent_again,
    an_offline_callee_with_a_device_is_rung_through_push,
    an_offline_user_invited_into_a_videochat_is_rung_through_push,
    a_cancelled_push_ring_sends_push_cancel,
    without_a_device_or_the_setting_an_offline_user_is_not_available,
    bad_register_frames_are_refused_and_change_nothing,
    more_deliveries_than_slots_are_each_sent_once,
);

/// Deliveries are sent from a thread of their own, scheduled below the handshake's threads, so
/// that under a saturated CPU rings and answers go first (docs/webhooks.md). Read from the
/// kernel's own account of the threads (Linux).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_sent_from_a_lower_priority_thread() {
    let receiver = Receiver::start(0).await;
    let url = receiver.url("/calls");
    let app = spawn(Backend::Sqlite, |_, h| webhooks(h, Some(url), None)).await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let request = ring(&mut alice, &mut bob).await;
    receiver
        .until(DEADLINE, |r| {
            !of_type(r, "call.requested", &request).is_empty()
        })
        .await;
    // (name, nice) of this process's threads: /proc/self/task/<tid>/stat has the name in
    // parentheses, then the nice value as the 17th field after it.
    let threads: Vec<(String, i64)> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            let (head, tail) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let nice = tail.split_whitespace().nth(16)?.parse().ok()?;
            Some((name, nice))
        })
        .collect();
    let own_nice = threads
        .iter()
        .filter(|(name, _)| name != "webhooks")
        .map(|(_, nice)| *nice)
        .min()
        .unwrap();
    assert!(
        threads
            .iter()
            .any(|(name, nice)| name == "webhooks" && *nice >= own_nice + 10),
        "no webhooks thread 10 below the others: {threads:?}"
    );
    app.stop().await;
}

/// The real binary killed outright (SIGKILL: nothing flushed, no shutdown) while it owes a
/// delivery loses nothing: started again on the same database, it delivers what the killed
/// process owed, under the same `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_loses_no_delivery() {
    let receiver = Receiver::start(0).await;
    receiver.answer(500).await;
    let dir = std::env::temp_dir().join(format!("vc-kill-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = receiver.url("/calls");

    let mut first = serve_binary(&dir, &url).await;
    let ws = first.ws_url();
    let mut alice = Client::connect(&ws, "alice", &TestApp::token("alice")).await;
    let mut bob = Client::connect(&ws, "bob", &TestApp::token("bob")).await;
    let request = ring(&mut alice, &mut bob).await;
    // Refused twice: the delivery is committed and being retried.
    let refused = receiver
        .until(DEADLINE, |r| {
            r.iter()
                .filter(|x| {
                    x["answered"] == 500 && x["payload"]["data"]["videochatRequestId"] == request
                })
                .count()
                >= 2
        })
        .await;
    first.child.start_kill().unwrap();
    first.child.wait().await.unwrap();
    drop((alice, bob));

    receiver.answer(200).await;
    let mut second = serve_binary(&dir, &url).await;
    // A claim the killed process held is due again when its lease (attempt timeout + 5 s) ends.
    let sent = requested_once_after_a_lease(&receiver, &request).await;
    let refused_ids: BTreeSet<_> = refused
        .iter()
        .filter(|x| x["payload"]["data"]["videochatRequestId"] == request)
        .filter_map(|x| x["id"].as_str())
        .collect();
    assert_eq!(
        refused_ids,
        BTreeSet::from([sent["id"].as_str().unwrap()]),
        "the same webhook-id before and after the kill"
    );
    // This process's own metrics (counted just after each answer): one delivered, after the
    // attempts the killed process never recorded as done.
    let counter = |body: &str, name: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let body = loop {
        let (_, body) = http_get(second.metrics, "/metrics").await.unwrap();
        if counter(&body, "videochat_webhook_delivered_total") >= 1.0 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never counted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(counter(&body, "videochat_webhook_delivered_total"), 1.0);
    assert_eq!(
        counter(&body, "videochat_webhook_attempts_total"),
        1.0 + counter(&body, "videochat_webhook_attempt_errors_total"),
        "every attempt either failed or delivered: {body}"
    );
    // Every event type's series is there from the start, at 0: alerts have something to read
    // before the first failure.
    for series in [
        r#"videochat_webhook_failed_total{event="call.missed"} 0"#,
        r#"videochat_webhook_failed_total{event="other"} 0"#,
        r#"videochat_webhook_attempts_total{event="push.cancel"} 0"#,
    ] {
        assert!(body.lines().any(|l| l == series), "{series} in {body}");
    }
    second.child.start_kill().unwrap();
    second.child.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `videochat serve` in `dir` (its SQLite database under `dir/data`) with call-status
/// webhooks to `url`, retrying fast.
async fn serve_binary(dir: &std::path::Path, url: &str) -> process::Served {
    process::spawn_serve(
        dir,
        &[
            ("VIDEOCHAT_JWT_SECRET", SECRET),
            ("VIDEOCHAT_WEBHOOK_URL", url),
            ("VIDEOCHAT_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("VIDEOCHAT_WEBHOOK_TIMEOUT_MS", "1000"),
            ("VIDEOCHAT_WEBHOOK_BACKOFF_MIN_MS", "100"),
            ("VIDEOCHAT_WEBHOOK_BACKOFF_MAX_MS", "200"),
            ("VIDEOCHAT_WEBHOOK_POLL_MS", "100"),
        ],
    )
    .await
}

/// An invite rings an offline user's phone too: `push.ring` names the invite and the videochat,
/// the app connects and accepts into it, and the push sender is told to stop ringing.
async fn an_offline_user_invited_into_a_videochat_is_rung_through_push(backend: Backend) {
    let receiver = Receiver::start(0).await;
    let push = receiver.url("/push");
    let app = spawn(backend, |_, h| webhooks(h, None, Some(push))).await;
    bob_registers_and_leaves(&app).await;
    let mut alice = app.connect("alice").await;
    let mut carol = app.connect("carol").await;
    let direct = ring(&mut alice, &mut carol).await;
    let (for_carol, _) = accept(&mut alice, &mut carol, &direct).await;
    let videochat = for_carol["videochatId"].clone();

    let invite = ok(&alice
        .request(
            "videochat:invite",
            json!({ "targetUser": "bob", "videochatId": videochat }),
        )
        .await)["videochatRequestId"]
        .clone();
    let received = receiver
        .until(DEADLINE, |r| !of_type(r, "push.ring", &invite).is_empty())
        .await;
    let data = &of_type(&received, "push.ring", &invite)[0]["payload"]["data"];
    assert_eq!(data["kind"], "invite");
    assert_eq!(data["videochatId"], videochat);
    assert_eq!(data["userId"], "bob");
    assert_eq!(data["caller"]["id"], "alice");

    let mut bob = app.connect("bob").await;
    let shown = bob.event(REQUESTED).await;
    assert_eq!(shown["data"]["videochatRequestId"], invite);
    let joined = ok(&bob
        .request(
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": invite }),
        )
        .await);
    assert_eq!(joined["videochatId"], videochat);
    let received = receiver
        .until(DEADLINE, |r| !of_type(r, "push.cancel", &invite).is_empty())
        .await;
    let cancel = &of_type(&received, "push.cancel", &invite)[0]["payload"]["data"];
    assert_eq!(cancel["reason"], "accepted");
    app.stop().await;
}
