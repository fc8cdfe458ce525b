//! `videochat client`: a command-line WebSocket client, to try the API from a terminal and to
//! script it. One socket per command; the token is signed here with the gateway's HS256 secret
//! (the development secret unless `VIDEOCHAT_JWT_SECRET` says otherwise), or given with
//! `--token`.
//!
//! Output: readable lines on stdout by default, notes (what the command waits for) on stderr.
//! With `--json`, stdout carries the frames that answer the command, exactly as received, one
//! per line: the response, plus for `call` the event that ends the ring, and for `listen` every
//! frame. Exit codes: 0 done; 1 refused (the error code and message are printed), or no
//! connection; 2 a call that ended without an answer (declined, cancelled or timed out);
//! 130 interrupted (Ctrl-C), after cancelling a call still ringing.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clap::{Args, Subcommand};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use videochat_gateway::envelope::{
    ACCEPT, DECLINE, EVENT_ACCEPTED, EVENT_DECLINED, EVENT_DIRECT_ACCEPTED, EVENT_REQUESTED,
    INVITE, LIST_CALLS, MERGE, REQUEST_DIRECT,
};

/// Exit code of a command that did what it was asked.
pub const EXIT_OK: i32 = 0;
/// Exit code of a refusal (error frame) or of a failure to connect.
pub const EXIT_REFUSED: i32 = 1;
/// Exit code of `call` when the ring ended without an answer: declined, cancelled or timeout.
pub const EXIT_NOT_ANSWERED: i32 = 2;
/// Exit code after Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Permission flags in the API text's order.
const PERMISSIONS: [&str; 8] = [
    "isModerator",
    "isOwner",
    "isPanelist",
    "isPresenter",
    "isCoPresenter",
    "isPromoted",
    "isParticipant",
    "isListener",
];

/// Lifetime of the token the client signs for itself.
const TOKEN_TTL_S: u64 = 3600;
/// How long closing (or cancelling on Ctrl-C) may wait for the server.
const GOODBYE: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The gateway's WebSocket URL (ws:// only: this client speaks no TLS).
    #[arg(
        long,
        global = true,
        env = "VIDEOCHAT_URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub url: String,

    /// Who you are: the user id the client signs its token for.
    #[arg(long = "as", value_name = "USER", required_unless_present = "token")]
    pub user: Option<String>,

    /// Display name "First Last", carried in the signed token (updates your profile).
    #[arg(long, requires = "user")]
    pub name: Option<String>,

    /// A ready-made token instead of one signed here (its `sub` is who you are).
    #[arg(long, conflicts_with = "user")]
    pub token: Option<String>,

    /// The gateway's HS256 secret, to sign the token with.
    #[arg(long, env = "VIDEOCHAT_JWT_SECRET", default_value = videochat_gateway::config::DEV_JWT_SECRET, hide_env_values = true, hide_default_value = true)]
    pub secret: String,

    /// Print the frames exactly as received, one per line (for scripts).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Ring a user: prints the request id, then waits for the answer (Ctrl-C cancels the call).
    Call {
        /// The user to call.
        user: String,
        /// Print the request id and exit; the ring goes on until answered or timed out.
        #[arg(long)]
        no_wait: bool,
    },
    /// Print incoming rings and every event as they come, until Ctrl-C.
    Listen,
    /// Accept a ring; prints your credentials for the videochat.
    Accept {
        /// The ring's `videochatRequestId`.
        request_id: String,
    },
    /// Decline a ring (or cancel your own call).
    Decline {
        /// The ring's `videochatRequestId`.
        request_id: String,
    },
    /// Ring a user into a videochat you are in; prints the request id.
    Invite {
        /// The user to invite.
        user: String,
        /// The videochat (`vc_…`).
        videochat_id: String,
    },
    /// Pull the caller of a ringing direct call into a videochat you are in.
    Merge {
        /// The videochat (`vc_…`).
        videochat_id: String,
        /// The ringing direct call's `videochatRequestId`.
        request_id: String,
    },
    /// Your call history, newest first (listing counts your missed calls as seen).
    Calls {
        /// How many (1 to 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only calls before this instant (Unix ms): the `next` a previous listing printed.
        #[arg(long)]
        before: Option<i64>,
    },
}

/// Why a command stopped early.
#[derive(Debug, thiserror::Error)]
enum ClientError {
    /// The server answered with an error frame.
    #[error("error {code} ({}): {message}", code_name(*.code))]
    Refused { code: i64, message: String },
    #[error("{0}")]
    Connect(String),
    #[error("the connection ended: {0}")]
    Closed(String),
}

/// Runs one client command; returns the process exit code.
pub async fn run(args: ClientArgs) -> i32 {
    let out = Output { json: args.json };
    // Listen for Ctrl-C from the start: a signal before the first wait must not kill the
    // process without cancelling its call.
    let mut interrupt = match Interrupt::new() {
        Ok(interrupt) => interrupt,
        Err(error) => {
            out.note(&format!("cannot listen for Ctrl-C: {error}"));
            return EXIT_REFUSED;
        }
    };
    let me = match &args.token {
        Some(token) => subject(token).unwrap_or_else(|| "?".into()),
        None => args.user.clone().unwrap_or_default(),
    };
    let token = match &args.token {
        Some(token) => token.clone(),
        None => match videochat_gateway::auth::sign_dev_token(
            &args.secret,
            &me,
            args.name.as_deref(),
            TOKEN_TTL_S,
        ) {
            Ok(token) => token,
            Err(error) => {
                out.note(&format!("cannot sign a token: {error}"));
                return EXIT_REFUSED;
            }
        },
    };
    let connected = tokio::select! {
        connected = Session::connect(&args.url, &token) => connected,
        () = interrupt.recv() => return EXIT_INTERRUPTED,
    };
    let mut session = match connected {
        Ok(session) => session,
        Err(error) => {
            out.note(&error.to_string());
            return EXIT_REFUSED;
        }
    };
    let context = Context {
        out,
        me,
        url: args.url,
    };
    let result = match args.action {
        Action::Call { user, no_wait } => {
            call(&mut session, &mut interrupt, &context, &user, no_wait).await
        }
        Action::Listen => listen(&mut session, &mut interrupt, &context).await,
        Action::Accept { request_id } => {
            unless_interrupted(&mut interrupt, accept(&mut session, &context, &request_id)).await
        }
        Action::Decline { request_id } => {
            unless_interrupted(&mut interrupt, decline(&mut session, &context, &request_id)).await
        }
        Action::Invite { user, videochat_id } => {
            let invite = invite(&mut session, &context, &user, &videochat_id);
            unless_interrupted(&mut interrupt, invite).await
        }
        Action::Merge {
            videochat_id,
            request_id,
        } => {
            let merge = merge(&mut session, &context, &videochat_id, &request_id);
            unless_interrupted(&mut interrupt, merge).await
        }
        Action::Calls { limit, before } => {
            let calls = calls(&mut session, &context, limit, before);
            unless_interrupted(&mut interrupt, calls).await
        }
    };
    let code = match result {
        Ok(code) => code,
        Err(error) => {
            context.out.note(&error.to_string());
            EXIT_REFUSED
        }
    };
    session.close().await;
    code
}

struct Context {
    out: Output,
    /// The user id, for the commands suggested in readable output.
    me: String,
    url: String,
}

impl Context {
    /// A `videochat client` command line that acts as this user.
    fn suggest(&self, action: &str) -> String {
        format!("videochat client --as {} {action}", self.me)
    }
}

async fn call(
    session: &mut Session,
    interrupt: &mut Interrupt,
    cx: &Context,
    target: &str,
    no_wait: bool,
) -> Result<i32, ClientError> {
    let response = tokio::select! {
        response = session.request(&cx.out, REQUEST_DIRECT, json!({ "targetUser": target })) => response?,
        // No request id yet to cancel with.
        () = interrupt.recv() => return Ok(EXIT_INTERRUPTED),
    };
    let request_id = text(&response.value["data"]["videochatRequestId"]);
    cx.out.frame_or(&response.raw, || {
        format!("calling {target}: request {request_id}")
    });
    if no_wait {
        cx.out.note(&format!(
            "not waiting; cancel with: {}",
            cx.suggest(&format!("decline {request_id}"))
        ));
        return Ok(EXIT_OK);
    }
    cx.out
        .note("waiting for an answer (Ctrl-C cancels the call)");
    loop {
        let frame = tokio::select! {
            frame = session.next_frame() => frame?,
            () = interrupt.recv() => return cancel(session, cx, &request_id).await,
        };
        let data = &frame.value["data"];
        if text(&data["videochatRequestId"]) != request_id {
            continue;
        }
        match frame.kind() {
            EVENT_DIRECT_ACCEPTED => {
                cx.out
                    .frame_or(&frame.raw, || format!("accepted\n{}", credentials(data)));
                return Ok(EXIT_OK);
            }
            EVENT_DECLINED => {
                let reason = text(&data["reason"]);
                cx.out.frame_or(&frame.raw, || {
                    format!("not answered: {reason} ({})", explain(&reason))
                });
                return Ok(EXIT_NOT_ANSWERED);
            }
            _ => {}
        }
    }
}

/// Ctrl-C while a call rings: withdraw it, so the other side stops ringing.
async fn cancel(session: &mut Session, cx: &Context, request_id: &str) -> Result<i32, ClientError> {
    let answer = tokio::time::timeout(
        GOODBYE,
        session.request(
            &cx.out,
            DECLINE,
            json!({ "videochatRequestId": request_id }),
        ),
    )
    .await;
    match answer {
        Ok(Ok(response)) => cx
            .out
            .frame_or(&response.raw, || format!("cancelled {request_id}")),
        // Answered meanwhile, or the server is gone: say so, still exit as interrupted.
        Ok(Err(error)) => cx.out.note(&format!("could not cancel: {error}")),
        Err(_) => cx.out.note("could not cancel: no answer from the server"),
    }
    Ok(EXIT_INTERRUPTED)
}

async fn listen(
    session: &mut Session,
    interrupt: &mut Interrupt,
    cx: &Context,
) -> Result<i32, ClientError> {
    cx.out.note(&format!(
        "listening as {} on {} (Ctrl-C to stop)",
        cx.me, cx.url
    ));
    loop {
        let frame = tokio::select! {
            frame = session.next_frame() => frame?,
            () = interrupt.recv() => return Ok(EXIT_OK),
        };
        cx.out
            .frame_or(&frame.raw, || describe_event(cx, &frame.value));
    }
}

/// A one-request command, given up on Ctrl-C (a server that does not answer must not hang it).
async fn unless_interrupted(
    interrupt: &mut Interrupt,
    command: impl Future<Output = Result<i32, ClientError>>,
) -> Result<i32, ClientError> {
    tokio::select! {
        result = command => result,
        () = interrupt.recv() => Ok(EXIT_INTERRUPTED),
    }
}

async fn accept(session: &mut Session, cx: &Context, request_id: &str) -> Result<i32, ClientError> {
    let response = session
        .request(&cx.out, ACCEPT, json!({ "videochatRequestId": request_id }))
        .await?;
    cx.out.frame_or(&response.raw, || {
        format!(
            "accepted {request_id}\n{}",
            credentials(&response.value["data"])
        )
    });
    Ok(EXIT_OK)
}

async fn decline(
    session: &mut Session,
    cx: &Context,
    request_id: &str,
) -> Result<i32, ClientError> {
    let response = session
        .request(
            &cx.out,
            DECLINE,
            json!({ "videochatRequestId": request_id }),
        )
        .await?;
    cx.out.frame_or(&response.raw, || {
        format!("declined {request_id} (a caller's own call counts as cancelled)")
    });
    Ok(EXIT_OK)
}

async fn invite(
    session: &mut Session,
    cx: &Context,
    target: &str,
    videochat_id: &str,
) -> Result<i32, ClientError> {
    let response = session
        .request(
            &cx.out,
            INVITE,
            json!({ "targetUser": target, "videochatId": videochat_id }),
        )
        .await?;
    let request_id = text(&response.value["data"]["videochatRequestId"]);
    cx.out.frame_or(&response.raw, || {
        format!("inviting {target} into {videochat_id}: request {request_id}")
    });
    Ok(EXIT_OK)
}

async fn calls(
    session: &mut Session,
    cx: &Context,
    limit: u32,
    before: Option<i64>,
) -> Result<i32, ClientError> {
    let mut data = json!({ "limit": limit });
    if let Some(before) = before {
        data["before"] = json!(before);
    }
    let response = session.request(&cx.out, LIST_CALLS, data).await?;
    let page = &response.value["data"];
    cx.out.frame_or(&response.raw, || {
        let mut out = String::new();
        let missed = page["missedCount"].as_u64().unwrap_or_default();
        if missed > 0 {
            let _ = writeln!(out, "{missed} missed since you last looked");
        }
        let now = now_ms();
        for call in page["calls"].as_array().into_iter().flatten() {
            let ago = (now - call["requestedAt"].as_i64().unwrap_or(now)).max(0) / 1000;
            let arrow = if call["direction"] == "outgoing" {
                "to  "
            } else {
                "from"
            };
            let mut line = format!(
                "{:>7} ago  {arrow} {:<16} {:<9}",
                human_seconds(ago),
                text(&call["user"]["id"]),
                text(&call["outcome"]),
            );
            if let Some(reason) = call["reason"].as_str() {
                let _ = write!(line, " ({reason})");
            }
            if call["kind"] == "invite" {
                let _ = write!(line, " invite into {}", text(&call["videochatId"]));
            }
            if let Some(ms) = call["inRoomMs"].as_i64() {
                let _ = write!(line, " {} in the room", human_seconds(ms / 1000));
            }
            let _ = writeln!(
                out,
                "{} {}",
                line.trim_end(),
                text(&call["videochatRequestId"])
            );
        }
        match page["next"].as_i64() {
            Some(next) => {
                let _ = write!(
                    out,
                    "older: {}",
                    cx.suggest(&format!("calls --before {next}"))
                );
            }
            None if page["calls"].as_array().is_none_or(Vec::is_empty) => {
                out.push_str("no calls");
            }
            None => out.truncate(out.trim_end().len()),
        }
        out
    });
    Ok(EXIT_OK)
}

/// `42s`, `5m`, `3h`, `2d`.
fn human_seconds(s: i64) -> String {
    match s {
        ..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

async fn merge(
    session: &mut Session,
    cx: &Context,
    videochat_id: &str,
    request_id: &str,
) -> Result<i32, ClientError> {
    let response = session
        .request(
            &cx.out,
            MERGE,
            json!({ "videochatId": videochat_id, "videochatRequestId": request_id }),
        )
        .await?;
    cx.out.frame_or(&response.raw, || {
        format!("merged {request_id} into {videochat_id}")
    });
    Ok(EXIT_OK)
}

// ---------------------------------------------------------------------------------------------
// The socket

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A frame as received (for `--json`) and parsed.
struct Frame {
    raw: String,
    value: Value,
}

impl Frame {
    fn kind(&self) -> &str {
        self.value["type"].as_str().unwrap_or_default()
    }
}

struct Session {
    ws: Ws,
    /// Frames that arrived while waiting for a response, in order.
    inbox: VecDeque<Frame>,
    /// Makes this run's `event.id`s unique (they are idempotency keys).
    nonce: String,
    seq: u64,
}

impl Session {
    async fn connect(url: &str, token: &str) -> Result<Self, ClientError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Connect(format!("bad --url {url}: {e}")))?;
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::Connect("the token is not a valid header value".into()))?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, bearer);
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Self {
                ws,
                inbox: VecDeque::new(),
                nonce: uuid::Uuid::new_v4().simple().to_string(),
                seq: 0,
            }),
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status();
                let hint = if status == http::StatusCode::UNAUTHORIZED {
                    ": the token was refused (is VIDEOCHAT_JWT_SECRET the gateway's?)"
                } else {
                    ""
                };
                Err(ClientError::Connect(format!(
                    "cannot connect to {url}: HTTP {status}{hint}"
                )))
            }
            Err(error) => Err(ClientError::Connect(format!(
                "cannot connect to {url}: {error}"
            ))),
        }
    }

    /// Sends a request and returns its successful response; a refusal is printed (as a frame
    /// with `--json`) and returned as an error.
    async fn request(
        &mut self,
        out: &Output,
        kind: &str,
        data: Value,
    ) -> Result<Frame, ClientError> {
        self.seq += 1;
        let id = format!("cli-{}-{}", self.nonce, self.seq);
        let frame = json!({
            "type": kind,
            "data": data,
            "event": { "id": id, "date": now_ms() },
        });
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))?;
        loop {
            let frame = self.read().await?;
            let is_response = frame.value["event"]["id"] == id.as_str() && !is_event(frame.kind());
            if !is_response {
                self.inbox.push_back(frame);
                continue;
            }
            if frame.value["error"]["status"] == true {
                if out.json {
                    out.line(&frame.raw);
                }
                return Err(ClientError::Refused {
                    code: frame.value["error"]["code"].as_i64().unwrap_or_default(),
                    message: text(&frame.value["error"]["message"]),
                });
            }
            return Ok(frame);
        }
    }

    /// The next frame: one kept while waiting for a response, or a new one.
    async fn next_frame(&mut self) -> Result<Frame, ClientError> {
        match self.inbox.pop_front() {
            Some(frame) => Ok(frame),
            None => self.read().await,
        }
    }

    async fn read(&mut self) -> Result<Frame, ClientError> {
        loop {
            let message = match self.ws.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Err(ClientError::Closed(error.to_string())),
                None => return Err(ClientError::Closed("the socket closed".into())),
            };
            match message {
                Message::Text(text) => {
                    let raw = text.as_str().to_owned();
                    let value = serde_json::from_str(&raw).unwrap_or(Value::Null);
                    return Ok(Frame { raw, value });
                }
                Message::Close(frame) => {
                    let why = frame
                        .map(|f| {
                            format!("the server closed it ({} {})", u16::from(f.code), f.reason)
                        })
                        .unwrap_or_else(|| "the server closed it".into());
                    return Err(ClientError::Closed(why));
                }
                // Pings are answered by tungstenite on the next read.
                _ => continue,
            }
        }
    }

    /// Closes politely, waiting a little for the server's close.
    async fn close(mut self) {
        let _ = tokio::time::timeout(GOODBYE, async {
            let _ = self.ws.close(None).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

fn is_event(kind: &str) -> bool {
    [
        EVENT_REQUESTED,
        EVENT_DIRECT_ACCEPTED,
        EVENT_ACCEPTED,
        EVENT_DECLINED,
    ]
    .contains(&kind)
}

/// Ctrl-C or SIGTERM, listened for from creation on.
#[cfg(unix)]
struct Interrupt {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Interrupt {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Interrupt;

#[cfg(not(unix))]
impl Interrupt {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn recv(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// Where the client writes: results on stdout, notes on stderr.
struct Output {
    json: bool,
}

impl Output {
    /// With `--json`, the frame as received; otherwise the readable text.
    fn frame_or(&self, raw: &str, readable: impl FnOnce() -> String) {
        if self.json {
            self.line(raw);
        } else {
            self.line(&readable());
        }
    }

    fn line(&self, text: &str) {
        // A closed pipe (`| head`) is not worth a panic.
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }

    fn note(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}

fn describe_event(cx: &Context, frame: &Value) -> String {
    let data = &frame["data"];
    let request_id = text(&data["videochatRequestId"]);
    match frame["type"].as_str().unwrap_or_default() {
        EVENT_REQUESTED => {
            let kind = match data["videochatId"].as_str() {
                Some(videochat) => {
                    let people: Vec<String> = data["participants"]
                        .as_array()
                        .map(|ps| ps.iter().map(|p| text(&p["id"])).collect())
                        .unwrap_or_default();
                    format!(
                        "invitation into {videochat} ({} in it: {})",
                        data["counter"],
                        people.join(", ")
                    )
                }
                None => "direct call".into(),
            };
            let left = (data["expiresAt"].as_i64().unwrap_or_default() - now_ms()).max(0) / 1000;
            format!(
                "ringing: {request_id} from {} — {kind}, {left} s left\n  accept:  {}\n  decline: {}",
                person(&data["user"]),
                cx.suggest(&format!("accept {request_id}")),
                cx.suggest(&format!("decline {request_id}")),
            )
        }
        EVENT_DIRECT_ACCEPTED => format!(
            "joined: your call {request_id} was answered\n{}",
            credentials(data)
        ),
        EVENT_ACCEPTED => format!("answered: {request_id} was accepted on one of your devices"),
        EVENT_DECLINED => {
            let reason = text(&data["reason"]);
            format!("ended: {request_id} {reason} ({})", explain(&reason))
        }
        other => format!("{other}: {data}"),
    }
}

/// "Alice Liddell (alice)", or just the id when there is no name.
fn person(user: &Value) -> String {
    let id = text(&user["id"]);
    let name = format!("{} {}", text(&user["firstName"]), text(&user["lastName"]));
    let name = name.trim();
    if name.is_empty() {
        id
    } else {
        format!("{name} ({id})")
    }
}

fn explain(reason: &str) -> &'static str {
    match reason {
        "declined" => "the person called said no",
        "cancelled" => "the caller hung up first",
        "timeout" => "nobody answered in time",
        _ => "no reason given",
    }
}

/// The join credentials, one field per line.
fn credentials(c: &Value) -> String {
    let mut lines = String::new();
    let mut row = |key: &str, value: String| {
        let _ = writeln!(lines, "  {key:<14}{value}");
    };
    row(
        "videochat",
        format!(
            "{} (mode {}, engine {})",
            text(&c["videochatId"]),
            text(&c["videochatMode"]),
            text(&c["videochatEngine"])
        ),
    );
    row("room", text(&c["room"]));
    row(
        "identity",
        format!("{} (uid {})", text(&c["identity"]), c["uid"]),
    );
    for (key, field) in [("url", "videochatUrl"), ("app id", "videochatAppId")] {
        if !text(&c[field]).is_empty() {
            row(key, text(&c[field]));
        }
    }
    let token = text(&c["token"]);
    row("token", token.clone());
    if let Some(exp) = token_expiry(&token) {
        row("token expires", format!("{} UTC", utc(exp)));
    }
    if !text(&c["sharedSecret"]).is_empty() {
        row("shared secret", text(&c["sharedSecret"]));
    }
    let granted: Vec<&str> = PERMISSIONS
        .into_iter()
        .filter(|name| c["permissions"][*name] == true)
        .collect();
    row("permissions", granted.join(" "));
    if text(&c["videochatEngine"]) == "livekit" && !text(&c["videochatUrl"]).is_empty() {
        row(
            "livekit meet",
            format!(
                "https://meet.livekit.io/custom?liveKitUrl={}&token={}",
                url_encode(&text(&c["videochatUrl"])),
                url_encode(&token)
            ),
        );
        row(
            "",
            "(works when the LiveKit server is reachable from your browser)".into(),
        );
    }
    lines.trim_end().to_owned()
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// The `exp` claim of a JWT (read to show it, not verified).
fn token_expiry(token: &str) -> Option<i64> {
    claims(token)?["exp"].as_i64()
}

/// The `sub` claim of a JWT given with `--token`.
fn subject(token: &str) -> Option<String> {
    claims(token)?["sub"].as_str().map(str::to_owned)
}

fn claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time in seconds.
fn utc(unix_s: i64) -> String {
    let (days, secs) = (unix_s.div_euclid(86_400), unix_s.rem_euclid(86_400));
    // Days to civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn code_name(code: i64) -> &'static str {
    match code {
        1000 => "bad frame",
        1001 => "unknown type",
        1002 => "invalid data",
        1003 => "rate limited",
        1004 => "internal error",
        1021 => "user not found",
        10011 => "user not available",
        10012 => "request not found",
        10013 => "not allowed",
        10014 => "no longer pending",
        10015 => "videochat not found",
        10016 => "cannot call or invite that user",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_764_000_000), "2025-11-24 16:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59");
    }

    #[test]
    fn url_encode_keeps_only_unreserved_characters() {
        assert_eq!(
            url_encode("ws://localhost:7880"),
            "ws%3A%2F%2Flocalhost%3A7880"
        );
        assert_eq!(url_encode("a.b-c_d~e"), "a.b-c_d~e");
    }

    #[test]
    fn a_dev_token_tells_its_subject_and_expiry() {
        let token = videochat_gateway::auth::sign_dev_token("s", "alice", None, 60).unwrap();
        assert_eq!(subject(&token).as_deref(), Some("alice"));
        let exp = token_expiry(&token).unwrap();
        assert!((exp - now_ms() / 1000 - 60).abs() <= 2, "{exp}");
    }

    #[test]
    fn credentials_show_the_livekit_link_and_granted_permissions() {
        let c = json!({
            "videochatId": "vc_1", "videochatMode": "videochat", "videochatEngine": "livekit",
            "videochatAppId": "", "videochatUrl": "ws://localhost:7880", "room": "vc_1",
            "identity": "bob", "uid": 2, "token": "a.b.c", "sharedSecret": "s",
            "permissions": { "isOwner": false, "isParticipant": true, "isPromoted": true },
        });
        let shown = credentials(&c);
        assert!(shown.contains("identity      bob (uid 2)"), "{shown}");
        assert!(
            shown.contains("permissions   isPromoted isParticipant"),
            "{shown}"
        );
        assert!(
            shown.contains(
                "https://meet.livekit.io/custom?liveKitUrl=ws%3A%2F%2Flocalhost%3A7880&token=a.b.c"
            ),
            "{shown}"
        );
        assert!(!shown.contains("app id"), "{shown}");
    }
}
