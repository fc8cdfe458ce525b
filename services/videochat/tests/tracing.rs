//! One handshake is one trace: WebSocket frame → gRPC client → gRPC server → SQL, and the events
//! it causes are delivered in spans linked to it. Checked with the SDK's in-memory exporter.
//! (Its own test binary: it installs the process-wide subscriber.)

mod common;

use common::*;
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [SpanData], name: &str, trace: TraceId) -> &'a SpanData {
    let found: Vec<_> = named(spans, name)
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name:?} in the trace, got {}",
        found.len()
    );
    found[0]
}

/// Whether `span` descends from `ancestor` (following parent ids).
fn descends(spans: &[SpanData], span: &SpanData, ancestor: SpanId) -> bool {
    let mut parent = span.parent_span_id;
    while parent != SpanId::INVALID {
        if parent == ancestor {
            return true;
        }
        match spans.iter().find(|s| s.span_context.span_id() == parent) {
            Some(next) => parent = next.parent_span_id,
            None => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handshake_is_one_trace_from_frame_to_sql() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    videochat_telemetry::install(
        provider.clone(),
        videochat_telemetry::LogFormat::Text,
        "warn",
    );

    let receiver = Receiver::start().await;
    let webhook_url = receiver.url();
    let app = TestApp::spawn_with(Backend::Sqlite, |_, handshake| {
        let w = &mut handshake.webhooks;
        w.webhook_url = vec![webhook_url];
        w.webhook_secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned().into());
        w.webhook_poll_ms = 100;
    })
    .await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    // The client joins its own trace through event.traceparent.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let frame = json!({
        "type": "videochat:requestDirectVideochat",
        "data": { "targetUser": "bob" },
        "event": { "id": "traced-1", "traceparent": format!("00-{client_trace}-00f067aa0ba902b7-01") },
    });
    alice.send_text(frame.to_string()).await;
    let response = alice.response_to("traced-1").await;
    let ring = ok(&response)["videochatRequestId"].clone();
    bob.event(REQUESTED).await;
    accept(&mut alice, &mut bob, &ring).await;
    // call.requested and call.accepted.
    receiver.until(2).await;
    app.stop().await;
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let trace = TraceId::from_hex(client_trace).unwrap();

    // Gateway: the frame span, a child of the client's own span.
    let frame = one(&spans, "videochat:requestDirectVideochat", trace);
    assert_eq!(frame.span_kind, SpanKind::Server);
    assert_eq!(
        frame.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    assert_eq!(
        attr(frame, "websocket.type").as_deref(),
        Some("videochat:requestDirectVideochat")
    );
    assert_eq!(attr(frame, "videochat.user").as_deref(), Some("alice"));
    assert!(attr(frame, "videochat.socket").is_some_and(|s| s.starts_with("conn_")));

    // gRPC client span under the frame; server span under the client span, across the hop.
    let method = "videochat.handshake.v1.Handshake/RequestDirectVideochat";
    let client = spans
        .iter()
        .find(|s| {
            s.name == method
                && s.span_kind == SpanKind::Client
                && s.span_context.trace_id() == trace
        })
        .expect("gRPC client span");
    assert_eq!(client.parent_span_id, frame.span_context.span_id());
    assert_eq!(attr(client, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr(client, "rpc.service").as_deref(),
        Some("videochat.handshake.v1.Handshake")
    );
    assert_eq!(
        attr(client, "rpc.method").as_deref(),
        Some("RequestDirectVideochat")
    );
    let server = spans
        .iter()
        .find(|s| {
            s.name == method
                && s.span_kind == SpanKind::Server
                && s.span_context.trace_id() == trace
        })
        .expect("gRPC server span");
    assert_eq!(server.parent_span_id, client.span_context.span_id());
    assert_eq!(attr(server, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attr(server, "rpc.grpc.status_code").as_deref(), Some("0"));

    // The state machine and its SQL under the server span.
    let execute = one(&spans, "handshake.execute", trace);
    assert!(descends(&spans, execute, server.span_context.span_id()));
    assert_eq!(
        attr(execute, "videochat.operation").as_deref(),
        Some("requestDirectVideochat")
    );
    // Two statements: the facts read, then the change and its events written together.
    for store_span in ["store.load", "store.apply"] {
        let span = one(&spans, store_span, trace);
        assert!(
            descends(&spans, span, execute.span_context.span_id()),
            "{store_span}"
        );
        assert_eq!(attr(span, "db.system").as_deref(), Some("sqlite"));
    }

    // The ring reached bob in a delivery span of its own, linked to alice's request.
    let delivery = named(&spans, "deliver videochat:videochatRequested")
        .into_iter()
        .find(|s| {
            s.links
                .links
                .iter()
                .any(|l| l.span_context.trace_id() == trace)
        })
        .expect("delivery span linked to the request");
    assert_eq!(attr(delivery, "videochat.user").as_deref(), Some("bob"));
    assert_eq!(attr(delivery, "videochat.sockets").as_deref(), Some("1"));

    // Without a client traceparent, a frame starts its own trace and the hop still connects.
    let accept = named(&spans, "videochat:acceptVideochatRequest")[0];
    let accept_trace = accept.span_context.trace_id();
    assert_ne!(accept_trace, trace);
    assert!(
        spans
            .iter()
            .any(|s| s.span_context.trace_id() == accept_trace
                && s.name == "videochat.handshake.v1.Handshake/AcceptVideochatRequest"
                && s.span_kind == SpanKind::Server)
    );

    // Each webhook sent is a client span of its own, naming the delivery, its event and the
    // receiver's answer.
    let sent = named(&spans, "webhook.deliver");
    let requested = sent
        .iter()
        .find(|s| attr(s, "webhook.event").as_deref() == Some("call.requested"))
        .expect("a webhook.deliver span for call.requested");
    assert_eq!(requested.span_kind, SpanKind::Client);
    assert!(
        attr(requested, "webhook.id").is_some_and(|id| id.starts_with("msg_")),
        "{requested:?}"
    );
    assert_eq!(
        attr(requested, "http.response.status_code").as_deref(),
        Some("200")
    );
    // Linked to the request that caused it, as the ring's delivery is.
    let links_to = |span: &SpanData, trace| {
        span.links
            .links
            .iter()
            .any(|l| l.span_context.trace_id() == trace)
    };
    assert!(links_to(requested, trace), "{requested:?}");
    let accepted = sent
        .iter()
        .find(|s| attr(s, "webhook.event").as_deref() == Some("call.accepted"))
        .expect("a webhook.deliver span for call.accepted");
    assert!(links_to(accepted, accept_trace), "{accepted:?}");
}

/// A webhook receiver that answers 200 to every request and counts them (only the sending side's
/// spans are checked here; `webhooks.rs` verifies what is sent).
struct Receiver {
    addr: std::net::SocketAddr,
    received: tokio::sync::watch::Receiver<usize>,
}

impl Receiver {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (count, received) = tokio::sync::watch::channel(0usize);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    // One request per connection: read the head and the body it announces.
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                        if let Some(head_end) = text.find("\r\n\r\n") {
                            let length = text[..head_end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if request.len() >= head_end + 4 + length {
                                break;
                            }
                        }
                    }
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    count.send_modify(|n| *n += 1);
                });
            }
        });
        Self { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    async fn until(&self, n: usize) {
        let mut received = self.received.clone();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            received.wait_for(|got| *got >= n),
        )
        .await
        .expect("webhooks received in time")
        .unwrap();
    }
}
