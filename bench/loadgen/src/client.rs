//! One simulated device: an authenticated socket whose arrivals are timestamped the moment they
//! are read, so a latency never includes the time a scenario spent waiting on another socket.
//!
//! A reader task per socket reads frames, notes `Instant::now()`, answers Engine.IO pings on the
//! spot and queues the rest (bounded) for the scenario, which takes them with a deadline. The
//! write half sits behind a mutex shared by the scenario (requests, liveness pings) and the
//! reader (pongs).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::engineio;
use crate::protocol::{Inbound, Protocol};

pub type Ws = WebSocketStream<TcpStream>;
type Sink = Arc<Mutex<SplitSink<Ws, Message>>>;

/// Arrivals a socket may hold before its reader waits for the scenario to take them.
const INBOX: usize = 64;

/// Opens sockets for users: everything that is the same for all of them.
pub struct Connector {
    pub protocol: Protocol,
    url: String,
    server: SocketAddr,
    secret: String,
    pub timeout: Duration,
    /// Unique per run: user ids and request ids carry it.
    pub run: Arc<str>,
}

impl Connector {
    pub async fn new(
        protocol: Protocol,
        url: &str,
        secret: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        let host = uri.host().context("URL without host")?;
        let port = uri.port_u16().unwrap_or(80);
        let server = tokio::net::lookup_host((host, port))
            .await?
            .find(SocketAddr::is_ipv4)
            .with_context(|| format!("{host} has no IPv4 address"))?;
        let run = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
        );
        Ok(Self {
            protocol,
            url: url.to_owned(),
            server,
            secret: secret.to_owned(),
            timeout,
            run: run.into(),
        })
    }

    /// A user id of this run.
    pub fn user(&self, role: &str, index: usize) -> String {
        format!("lg-{}-{role}-{index}", self.run)
    }

    /// Connects `user` (from `source`, when given: one source address has ~28k ephemeral ports),
    /// authenticated and ready for requests.
    pub async fn connect(&self, user: &str, source: Option<IpAddr>) -> anyhow::Result<Client> {
        let token = videochat_gateway::auth::sign_dev_token(&self.secret, user, Some(user), 3600)?;
        let socket = TcpSocket::new_v4()?;
        if let Some(source) = source {
            socket
                .bind(SocketAddr::new(source, 0))
                .with_context(|| format!("binding {source}"))?;
        }
        let opening = async {
            let stream = socket.connect(self.server).await.context("TCP connect")?;
            // As browsers and mobile stacks do; small frames must not wait for delayed ACKs.
            stream.set_nodelay(true)?;
            // A small read buffer: the default (128 KiB, zeroed on first read) made opening
            // 15,000 sockets a measure of this process's page faults rather than the server's.
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(4 * 1024);
            let (mut ws, _) = tokio_tungstenite::client_async_with_config(
                self.protocol.url(&self.url, &token),
                stream,
                Some(config),
            )
            .await
            .context("WebSocket upgrade")?;
            self.protocol.open(&mut ws, &token, self.timeout).await?;
            anyhow::Ok(ws)
        };
        let ws = tokio::time::timeout(self.timeout, opening)
            .await
            .context("timed out connecting")??;
        Ok(Client::new(ws, self))
    }
}

/// A timestamped arrival.
struct Arrival {
    at: Instant,
    inbound: Inbound,
}

pub struct Client {
    protocol: Protocol,
    sink: Sink,
    inbox: mpsc::Receiver<Arrival>,
    reader: JoinHandle<()>,
    sequence: u64,
    run: Arc<str>,
    timeout: Duration,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    fn new(ws: Ws, connector: &Connector) -> Self {
        let (sink, stream) = ws.split();
        let sink = Arc::new(Mutex::new(sink));
        let (sender, inbox) = mpsc::channel(INBOX);
        let reader = tokio::spawn(read(stream, sink.clone(), connector.protocol, sender));
        Self {
            protocol: connector.protocol,
            sink,
            inbox,
            reader,
            sequence: 0,
            run: connector.run.clone(),
            timeout: connector.timeout,
        }
    }

    /// Sends a request; returns its id and when it was handed to the socket.
    pub async fn request(&mut self, kind: &str, data: &Value) -> anyhow::Result<(String, Instant)> {
        self.sequence += 1;
        let (id, text) = self
            .protocol
            .encode_request(self.sequence, &self.run, kind, data);
        let sent = Instant::now();
        self.sink
            .lock()
            .await
            .send(Message::Text(text.into()))
            .await
            .with_context(|| format!("sending {kind}"))?;
        Ok((id, sent))
    }

    /// The response to request `id`: when it arrived, and its data. An error answer is an error.
    pub async fn response(&mut self, id: &str, what: &str) -> anyhow::Result<(Instant, Value)> {
        let (at, outcome) = self
            .next_matching(what, |inbound| match inbound {
                Inbound::Response { id: got, outcome } if got == id => Some(outcome),
                _ => None,
            })
            .await?;
        match outcome {
            Ok(data) => Ok((at, data)),
            Err(error) => bail!("{what}: {error}"),
        }
    }

    /// The next event `name` whose data satisfies `want`; earlier frames are dropped.
    pub async fn event(
        &mut self,
        name: &str,
        want: impl Fn(&Value) -> bool,
        what: &str,
    ) -> anyhow::Result<(Instant, Value)> {
        self.next_matching(what, |inbound| match inbound {
            Inbound::Event { name: got, data } if got == name && want(&data) => Some(data),
            _ => None,
        })
        .await
    }

    /// A WebSocket ping answered by a pong: the socket is alive end to end.
    pub async fn ping(&mut self) -> anyhow::Result<Duration> {
        let sent = Instant::now();
        self.sink
            .lock()
            .await
            .send(Message::Ping(Vec::new().into()))
            .await?;
        let (at, ()) = self
            .next_matching("pong", |inbound| match inbound {
                Inbound::Pong => Some(()),
                _ => None,
            })
            .await?;
        Ok(at - sent)
    }

    /// A polite close, bounded by the timeout.
    pub async fn close(self) {
        let sink = self.sink.clone();
        let _ = tokio::time::timeout(self.timeout, async move { sink.lock().await.close().await })
            .await;
    }

    async fn next_matching<T>(
        &mut self,
        what: &str,
        mut matches: impl FnMut(Inbound) -> Option<T>,
    ) -> anyhow::Result<(Instant, T)> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let arrival = match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some(arrival)) => arrival,
                Ok(None) => bail!("socket closed while waiting for {what}"),
                Err(_) => bail!("timed out waiting for {what}"),
            };
            if let Some(found) = matches(arrival.inbound) {
                return Ok((arrival.at, found));
            }
        }
    }
}

/// The reader task: ends when the socket does or the client is dropped.
async fn read(
    mut stream: SplitStream<Ws>,
    sink: Sink,
    protocol: Protocol,
    inbox: mpsc::Sender<Arrival>,
) {
    while let Some(Ok(message)) = stream.next().await {
        let at = Instant::now();
        let inbound = match message {
            Message::Text(text) => protocol.decode(text.as_str()),
            Message::Pong(_) => Some(Inbound::Pong),
            Message::Close(_) => break,
            _ => None,
        };
        let arrival = match inbound {
            Some(Inbound::Ping) => {
                let pong = Message::Text(engineio::PONG.into());
                if sink.lock().await.send(pong).await.is_err() {
                    break;
                }
                continue;
            }
            Some(inbound) => Arrival { at, inbound },
            None => continue,
        };
        if inbox.send(arrival).await.is_err() {
            break;
        }
    }
}
