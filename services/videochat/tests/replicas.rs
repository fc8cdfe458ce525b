//! Several gateways and service replicas on one Postgres: rings cross replicas, and a replica
//! restart loses no event that was due.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use videochat_handshake::{Listeners, Replica};

struct Part {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Part {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn replica(database_url: &str, listener: TcpListener) -> Part {
    let (_, mut config) = configs();
    config.database_url = database_url.to_owned();
    let replica = Replica::build(config).await.expect("replica starts");
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        replica
            .run(
                Listeners {
                    grpc: listener,
                    metrics: None,
                },
                videochat::telemetry::prometheus(),
                token,
            )
            .await
            .expect("replica ran");
    });
    Part { stop, task }
}

async fn gateway(grpc: SocketAddr) -> (Part, String) {
    let (mut config, _) = configs();
    config.handshake_url = format!("http://{grpc}");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        videochat_gateway::run(config, listener, videochat::telemetry::prometheus(), token)
            .await
            .expect("gateway ran");
    });
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while http_get(addr, "/readyz").await.map(|(s, _)| s) != Some(200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway never ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (Part { stop, task }, format!("ws://{addr}/ws"))
}

async fn connect(url: &str, user: &str) -> Client {
    Client::connect(url, user, &TestApp::token(user)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rings_cross_replicas_and_survive_a_replica_restart() {
    let db = TestDb::new(Backend::Postgres).await;
    let first_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first_addr = first_listener.local_addr().unwrap();
    let second_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_addr = second_listener.local_addr().unwrap();
    let first = replica(&db.url, first_listener).await;
    let second = replica(&db.url, second_listener).await;
    let (gateway_one, ws_one) = gateway(first_addr).await;
    let (gateway_two, ws_two) = gateway(second_addr).await;

    // alice's socket is on gateway one (replica one), bob's on gateway two (replica two).
    let mut alice = connect(&ws_one, "alice").await;
    let mut bob = connect(&ws_two, "bob").await;
    let ring = ring(&mut alice, &mut bob).await;
    let (_, for_alice) = accept(&mut alice, &mut bob, &ring).await;
    assert_eq!(for_alice["identity"], "alice");

    // Replica one goes away: gateway one loses its event stream.
    first.stop().await;
    // Meanwhile carol, on gateway two, calls alice: the ring commits on replica two, with an
    // event due to alice whose gateway is detached.
    let mut carol = connect(&ws_two, "carol").await;
    let ring = ok(&carol
        .request(
            "videochat:requestDirectVideochat",
            json!({ "targetUser": "alice" }),
        )
        .await)["videochatRequestId"]
        .clone();

    // Replica one comes back on the same address; gateway one reattaches and resumes.
    let listener = TcpListener::bind(first_addr).await.expect("rebind");
    let first = replica(&db.url, listener).await;
    let delivered = alice.event(REQUESTED).await;
    assert_eq!(delivered["data"]["videochatRequestId"], ring);
    assert_eq!(delivered["data"]["user"]["id"], "carol");
    // And it was delivered once.
    alice.no_event(REQUESTED, Duration::from_millis(500)).await;
    ok(&alice
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": ring }),
        )
        .await);
    assert_eq!(carol.event(DECLINED).await["data"]["reason"], "declined");

    for part in [gateway_one, gateway_two, first, second] {
        part.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restart_closes_sockets_with_1012_and_reconnects_find_their_rings() {
    let db = TestDb::new(Backend::Postgres).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = listener.local_addr().unwrap();
    let service = replica(&db.url, listener).await;
    let (old_gateway, old_ws) = gateway(grpc).await;
    let (other_gateway, other_ws) = gateway(grpc).await;

    let bob = connect(&old_ws, "bob").await;
    let mut alice = connect(&other_ws, "alice").await;
    let ring = ok(&alice
        .request(
            "videochat:requestDirectVideochat",
            json!({ "targetUser": "bob" }),
        )
        .await)["videochatRequestId"]
        .clone();

    // Bob's gateway is stopped (deploy, crash-restart): his socket is told to come back.
    let stopping = tokio::spawn(old_gateway.stop());
    assert_eq!(bob.closed_by_server().await, Some(1012));
    stopping.await.unwrap();

    // He reconnects through another gateway and still sees the ring, and can answer it.
    let mut bob = connect(&other_ws, "bob").await;
    assert_eq!(
        bob.event(REQUESTED).await["data"]["videochatRequestId"],
        ring
    );
    accept(&mut alice, &mut bob, &ring).await;
    other_gateway.stop().await;
    service.stop().await;
}
