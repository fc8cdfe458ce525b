//! Test helpers: start the real stack on ephemeral ports against a fresh database (SQLite file
//! or a new Postgres database), and talk to it over real WebSockets and real gRPC.

#![allow(dead_code)]

pub mod node;
pub mod private_pg;
pub mod process;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use videochat::stack::{Bound, Embedded};
use videochat_gateway::GatewayConfig;
use videochat_handshake::HandshakeConfig;

/// How long a test waits for something that should happen.
pub const DEADLINE: Duration = Duration::from_secs(10);
pub const SECRET: &str = "test-secret";
/// The internal gRPC credentials of the test stacks: gateways started beside the embedded one
/// use the first; tests playing an internal service the second.
pub const GATEWAY_TOKEN: &str = "test-gateway-credential-0123456789abcdef";
pub const SERVICE_TOKEN: &str = "test-service-credential-0123456789abcdef";

pub const REQUESTED: &str = "videochat:videochatRequested";
pub const DIRECT_ACCEPTED: &str = "videochat:directVideochatRequestAccepted";
pub const ACCEPTED: &str = "videochat:videochatAccepted";
pub const DECLINED: &str = "videochat:videochatDeclined";
pub const RESYNC: &str = "videochat:resync";
pub const MISSED_CALLS: &str = "videochat:missedCalls";
const EVENT_TYPES: [&str; 6] = [
    REQUESTED,
    DIRECT_ACCEPTED,
    ACCEPTED,
    DECLINED,
    RESYNC,
    MISSED_CALLS,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Defines `mod <test> { sqlite(); postgres(); }` for each behaviour test `async fn <test>(Backend)`,
/// so the same suite runs on both stores.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}

#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    gateway: GatewayConfig,
    #[command(flatten)]
    handshake: HandshakeConfig,
}

/// Configuration for tests: ephemeral ports, the test secret, a quick presence lease.
pub fn configs() -> (GatewayConfig, HandshakeConfig) {
    let Defaults {
        mut gateway,
        mut handshake,
    } = Defaults::try_parse_from(["test"]).expect("defaults parse");
    gateway.ws_addr = "127.0.0.1:0".parse().unwrap();
    gateway.jwt_secret = SECRET.into();
    gateway.jwt_public_key_file = None;
    gateway.jwks_file = None;
    gateway.rate_limit_per_s = 200;
    gateway.rate_limit_burst = 400;
    gateway.drain_timeout_s = 2.0;
    gateway.grpc_token = Some(GATEWAY_TOKEN.into());
    handshake.grpc_gateway_tokens = vec![GATEWAY_TOKEN.to_owned().into()];
    handshake.grpc_service_tokens = vec![SERVICE_TOKEN.to_owned().into()];
    handshake.grpc_services_act_for_users = true;
    handshake.grpc_addr = "127.0.0.1:0".parse().unwrap();
    handshake.metrics_addr = "127.0.0.1:0".parse().unwrap();
    handshake.ring_timeout_s = 30.0;
    handshake.outbox_poll_ms = 200;
    handshake.engines.engine = videochat_handshake::engine::EngineKind::Livekit;
    handshake.engines.livekit_url = Some("ws://localhost:7880".into());
    handshake.engines.livekit_api_key = Some("devkey".into());
    handshake.engines.livekit_api_secret = Some("secret".into());
    handshake.engines.agora_app_id = None;
    handshake.engines.agora_app_certificate = None;
    handshake.engines.twilio_account_sid = None;
    handshake.engines.twilio_api_key_sid = None;
    handshake.engines.twilio_api_key_secret = None;
    (gateway, handshake)
}

/// A database of its own for one test; removed when dropped.
pub struct TestDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    Postgres {
        admin_url: String,
        name: String,
    },
    /// Another handle cleans up (see [`TestDb::take`]).
    None,
}

pub fn postgres_admin_url() -> String {
    std::env::var("VIDEOCHAT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let name = format!("vc_test_{}", uuid::Uuid::new_v4().simple());
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).unwrap();
                Self {
                    url: format!("sqlite://{}/videochat.db", dir.display()),
                    cleanup: Cleanup::Dir(dir),
                }
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let admin_url = postgres_admin_url();
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!(
                        "Postgres tests need a server at {admin_url} ({e}). Start one, or point \
                         VIDEOCHAT_TEST_POSTGRES_URL at one (a user allowed to CREATE DATABASE)."
                    )
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let base = admin_url
                    .rsplit_once('/')
                    .map(|(b, _)| b)
                    .unwrap_or(&admin_url);
                Self {
                    url: format!("{base}/{name}"),
                    cleanup: Cleanup::Postgres { admin_url, name },
                }
            }
        }
    }
}

impl TestDb {
    /// A handle that now owns the database's cleanup; this one cleans nothing. The database
    /// then outlives the app that made it, so a restart test can start another app on it.
    pub fn take(&mut self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            cleanup: std::mem::replace(&mut self.cleanup, Cleanup::None),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::None => {}
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Drop runs outside async; a short-lived runtime on its own thread does the work.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    runtime.block_on(async {
                        use sqlx::Connection;
                        let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await
                        .ok()
                    })
                })
                .join();
            }
        }
    }
}

/// The whole stack (gateway + handshake service, gRPC between them) on ephemeral ports.
pub struct TestApp {
    pub bound: Bound,
    /// The replica's gRPC stack as the embedded gateway calls it (in this process).
    pub in_process: videochat_gateway::Transport,
    pub db: TestDb,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    ids: AtomicU64,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_, _| {}).await
    }

    pub async fn spawn_with(
        backend: Backend,
        adjust: impl FnOnce(&mut GatewayConfig, &mut HandshakeConfig),
    ) -> Self {
        Self::spawn_on(TestDb::new(backend).await, adjust).await
    }

    /// The stack on an existing database (e.g. one an earlier app used: a restart).
    pub async fn spawn_on(
        db: TestDb,
        adjust: impl FnOnce(&mut GatewayConfig, &mut HandshakeConfig),
    ) -> Self {
        let (mut gateway, mut handshake) = configs();
        handshake.database_url = db.url.clone();
        adjust(&mut gateway, &mut handshake);
        let embedded = Embedded::bind(gateway, handshake)
            .await
            .expect("stack starts");
        let bound = embedded.bound;
        let in_process = embedded.in_process();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(embedded.run(shutdown.clone()));
        let app = Self {
            bound,
            in_process,
            db,
            shutdown,
            task: Some(task),
            ids: AtomicU64::new(0),
        };
        app.wait_ready().await;
        app
    }

    /// Waits until `/readyz` says the gateway's event stream is attached.
    pub async fn wait_ready(&self) {
        until_ready(self.bound.ws).await;
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.bound.ws)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.bound.grpc)
    }

    /// A gRPC channel to the service whose calls carry `token` (none: no credential at all).
    pub async fn grpc_as(&self, token: Option<&str>) -> GrpcChannel {
        grpc_channel(&self.grpc_url(), token).await
    }

    /// `Handshake` as an internal service.
    pub async fn handshake_client(
        &self,
    ) -> videochat_proto::v1::handshake_client::HandshakeClient<GrpcChannel> {
        videochat_proto::v1::handshake_client::HandshakeClient::new(
            self.grpc_as(Some(SERVICE_TOKEN)).await,
        )
    }

    /// `UserDirectory` as an internal service.
    pub async fn users_client(
        &self,
    ) -> videochat_proto::v1::user_directory_client::UserDirectoryClient<GrpcChannel> {
        videochat_proto::v1::user_directory_client::UserDirectoryClient::new(
            self.grpc_as(Some(SERVICE_TOKEN)).await,
        )
    }

    pub fn token(user: &str) -> String {
        videochat_gateway::auth::sign_dev_token(SECRET, user, Some(&format!("{user} Tester")), 3600)
            .unwrap()
    }

    /// Opens an authenticated socket for `user` (its profile comes from the token).
    pub async fn connect(&self, user: &str) -> Client {
        Client::connect(&self.ws_url(), user, &Self::token(user)).await
    }

    /// Stops the stack and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("stack task").expect("stack ran cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Attaches `authorization: Bearer <token>` to every call, as an internal caller does.
#[derive(Clone)]
pub struct Bearer(pub Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type GrpcChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// A connected channel to `url` whose calls carry `token`.
pub async fn grpc_channel(url: &str, token: Option<&str>) -> GrpcChannel {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .expect("gRPC port reachable");
    let bearer = Bearer(token.map(|t| format!("Bearer {t}").parse().unwrap()));
    tonic::service::interceptor::InterceptedService::new(channel, bearer)
}

/// Plain HTTP GET over a TCP socket; returns status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Waits until the gateway on `addr` answers `/readyz` with 200: its event stream is attached,
/// so a user it serves can be rung.
pub async fn until_ready(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while http_get(addr, "/readyz").await.map(|(s, _)| s) != Some(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway {addr} never ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Plain HTTP request over a TCP socket with extra headers and a body; returns status and body.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("gateway reachable");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One client socket. Frames that arrive while waiting for something else are kept in order.
pub struct Client {
    pub user: String,
    ws: Ws,
    inbox: VecDeque<Value>,
    next_id: u64,
    /// Distinguishes the event ids of two sockets of one user.
    nonce: String,
}

impl Client {
    pub async fn connect(url: &str, user: &str, token: &str) -> Self {
        let separator = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{separator}access_token={token}");
        let (ws, response) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
        assert_eq!(response.status(), 101);
        Self {
            user: user.to_owned(),
            ws,
            inbox: VecDeque::new(),
            next_id: 0,
            nonce: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        }
    }

    pub fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}-{}", self.user, self.nonce, self.next_id)
    }

    /// Sends a binary frame and returns the next frame that is not a server event.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Value {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
        loop {
            let frame = self.read().await;
            if !is_event(&frame) {
                return frame;
            }
            self.inbox.push_back(frame);
        }
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    async fn read(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: nothing arrived within {DEADLINE:?}", self.user))
                .unwrap_or_else(|| panic!("{}: socket closed", self.user))
                .unwrap_or_else(|e| panic!("{}: socket error {e}", self.user));
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("server sends JSON");
                }
                Message::Close(frame) => {
                    panic!("{}: server closed the socket: {frame:?}", self.user)
                }
                _ => continue,
            }
        }
    }

    /// Sends a request with a fresh `event.id` and returns its response.
    pub async fn request(&mut self, kind: &str, data: Value) -> Value {
        let id = self.fresh_id();
        self.request_with_id(kind, data, &id).await
    }

    /// Sends a request with the given `event.id` and returns its response (the frame echoing
    /// that id), keeping any events that arrive meanwhile.
    pub async fn request_with_id(&mut self, kind: &str, data: Value, id: &str) -> Value {
        let frame = json!({ "type": kind, "data": data, "event": { "id": id, "date": 1_764_000_000_000i64 } });
        self.send_text(frame.to_string()).await;
        self.response_to(id).await
    }

    pub async fn response_to(&mut self, id: &str) -> Value {
        loop {
            let frame = self.read().await;
            if frame["event"]["id"] == id && !is_event(&frame) {
                return frame;
            }
            self.inbox.push_back(frame);
        }
    }

    /// Sends raw text and returns the next frame that is not a server event.
    pub async fn send_raw(&mut self, text: &str) -> Value {
        self.send_text(text.to_owned()).await;
        loop {
            let frame = self.read().await;
            if !is_event(&frame) {
                return frame;
            }
            self.inbox.push_back(frame);
        }
    }

    /// The next event of `kind` (earlier events of other kinds stay queued).
    pub async fn event(&mut self, kind: &str) -> Value {
        if let Some(i) = self.inbox.iter().position(|f| f["type"] == kind) {
            return self.inbox.remove(i).unwrap();
        }
        loop {
            let frame = self.read().await;
            if frame["type"] == kind {
                return frame;
            }
            self.inbox.push_back(frame);
        }
    }

    /// Whether an event of `kind` has arrived and is waiting (read before a response, say).
    pub fn has_queued(&self, kind: &str) -> bool {
        self.inbox.iter().any(|f| f["type"] == kind)
    }

    /// Asserts that no event of `kind` arrives within `window`.
    pub async fn no_event(&mut self, kind: &str, window: Duration) {
        assert!(
            !self.inbox.iter().any(|f| f["type"] == kind),
            "{}: unexpected {kind} already queued",
            self.user
        );
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
            let Ok(Some(Ok(Message::Text(text)))) = next else {
                match next {
                    Err(_) => return,
                    Ok(Some(Ok(_))) => continue,
                    other => panic!("{}: socket ended while waiting: {other:?}", self.user),
                }
            };
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            assert_ne!(frame["type"], kind, "{}: unexpected {frame}", self.user);
            self.inbox.push_back(frame);
        }
    }

    /// Every frame queued or arriving until none has arrived for `quiet` (at most 30 s in all).
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut frames: Vec<Value> = self.inbox.drain(..).collect();
        let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < give_up {
            match tokio::time::timeout(quiet, self.ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Text(text)))) => {
                    frames.push(serde_json::from_str(text.as_str()).expect("server sends JSON"))
                }
                Ok(Some(Ok(_))) => continue,
                other => panic!("{}: socket ended while draining: {other:?}", self.user),
            }
        }
        frames
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn closed_by_server(mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(DEADLINE, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => return None,
                Err(_) => panic!("{}: server never closed the socket", self.user),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Read until the server's close arrives so the server has seen it.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(DEADLINE, self.ws.next()).await {}
    }
}

fn is_event(frame: &Value) -> bool {
    EVENT_TYPES.iter().any(|t| frame["type"] == *t)
}

/// Asserts a successful response and returns its data.
#[track_caller]
pub fn ok(frame: &Value) -> Value {
    assert_eq!(
        frame["error"]["status"], false,
        "expected success, got {frame}"
    );
    assert_eq!(frame["error"]["code"], 0, "{frame}");
    frame.get("data").cloned().unwrap_or(Value::Null)
}

/// Asserts a failed response with `code`.
#[track_caller]
pub fn err(frame: &Value, code: i64) {
    assert_eq!(
        frame["error"]["status"], true,
        "expected error {code}, got {frame}"
    );
    assert_eq!(frame["error"]["code"], code, "{frame}");
    assert!(
        frame.get("data").is_none(),
        "failed response carries data: {frame}"
    );
    assert!(
        frame["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{frame}"
    );
}

/// Sends a request and asserts it is refused with `code`.
pub async fn refused(client: &mut Client, kind: &str, data: Value, code: i64) {
    let frame = client.request(kind, data).await;
    err(&frame, code);
}

/// A Python virtualenv with `tests/<dir>/requirements.txt` installed, made once per target
/// directory (re-made when the requirements change). Used to check our output with libraries we
/// did not write. Needs python3 with `venv`, and the package index the first time.
pub fn python_venv(dir: &str) -> (PathBuf, PathBuf) {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{dir}-venv"));
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.installed");
    let requirements = std::fs::read_to_string(here.join("requirements.txt")).unwrap();
    // Tests run in parallel threads and several test binaries may want the same venv at once:
    // an exclusive file lock makes one of them build it while the others wait and then reuse it.
    let lock = std::fs::File::create(venv.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(requirements.as_str()) {
        let status = std::process::Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "python3 -m venv failed: this check needs python3 with venv and pip"
        );
        let status = std::process::Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(here.join("requirements.txt"))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pip install -r tests/{dir}/requirements.txt failed"
        );
        std::fs::write(&stamp, requirements).unwrap();
    }
    drop(lock);
    (python, here)
}

/// `initiator` calls `target`, whose socket rings; returns the ring's `videochatRequestId`.
pub async fn ring(initiator: &mut Client, target: &mut Client) -> Value {
    let response = initiator
        .request(
            "videochat:requestDirectVideochat",
            json!({ "targetUser": target.user }),
        )
        .await;
    let id = ok(&response)["videochatRequestId"].clone();
    assert_eq!(
        target.event(REQUESTED).await["data"]["videochatRequestId"],
        id
    );
    id
}

/// `target` accepts `ring`; returns (target's credentials, initiator's credentials).
pub async fn accept(initiator: &mut Client, target: &mut Client, ring: &Value) -> (Value, Value) {
    let response = target
        .request(
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": ring }),
        )
        .await;
    let for_target = ok(&response);
    let for_initiator = initiator.event(DIRECT_ACCEPTED).await["data"].clone();
    (for_target, for_initiator)
}

/// The sum of a metric's series in this process's recorder (where every piece a test runs in
/// the process reports), over the series whose labels contain `labels` (`""`: all of them).
pub fn local_metric(name: &str, labels: &str) -> f64 {
    videochat::telemetry::prometheus()
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
