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

/// A gateway on `grpc`, ready; returns it, its WebSocket URL and its HTTP address.
async fn gateway(grpc: SocketAddr) -> (Part, String, SocketAddr) {
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
    until_ready(addr).await;
    (Part { stop, task }, format!("ws://{addr}/ws"), addr)
}

/// Two replicas on one Postgres database, each with a gateway of its own.
struct Sides {
    db: TestDb,
    first: Part,
    first_addr: SocketAddr,
    second: Part,
    gateway_one: Part,
    ws_one: String,
    http_one: SocketAddr,
    gateway_two: Part,
    ws_two: String,
}

impl Sides {
    async fn start() -> Self {
        let db = TestDb::new(Backend::Postgres).await;
        let first_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let first_addr = first_listener.local_addr().unwrap();
        let second_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let second_addr = second_listener.local_addr().unwrap();
        let first = replica(&db.url, first_listener).await;
        let second = replica(&db.url, second_listener).await;
        let (gateway_one, ws_one, http_one) = gateway(first_addr).await;
        let (gateway_two, ws_two, _) = gateway(second_addr).await;
        Self {
            db,
            first,
            first_addr,
            second,
            gateway_one,
            ws_one,
            http_one,
            gateway_two,
            ws_two,
        }
    }
}

async fn connect(url: &str, user: &str) -> Client {
    Client::connect(url, user, &TestApp::token(user)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rings_cross_replicas_and_survive_a_replica_restart() {
    let Sides {
        db,
        first,
        first_addr,
        second,
        gateway_one,
        ws_one,
        http_one: _,
        gateway_two,
        ws_two,
    } = Sides::start().await;

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
    let (old_gateway, old_ws, _) = gateway(grpc).await;
    let (other_gateway, other_ws, _) = gateway(grpc).await;

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

/// Rings `bob` and cancels the ring, `rounds` times; returns the client and the rings' ids.
async fn ring_and_cancel(mut caller: Client, rounds: usize) -> (Client, Vec<String>) {
    let mut rings = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let ring = ok(&caller
            .request(
                "videochat:requestDirectVideochat",
                json!({ "targetUser": "bob" }),
            )
            .await)["videochatRequestId"]
            .as_str()
            .unwrap()
            .to_owned();
        ok(&caller
            .request(
                "videochat:declineVideochatRequest",
                json!({ "videochatRequestId": ring }),
            )
            .await);
        rings.push(ring);
    }
    (caller, rings)
}

/// Runs every caller's rounds at once; returns the callers and all rings made.
async fn round(callers: Vec<Client>, rounds: usize, rings: &mut Vec<String>) -> Vec<Client> {
    let tasks: Vec<_> = callers
        .into_iter()
        .map(|caller| tokio::spawn(ring_and_cancel(caller, rounds)))
        .collect();
    let mut back = Vec::new();
    for task in tasks {
        let (caller, made) = task.await.expect("caller ran");
        rings.extend(made);
        back.push(caller);
    }
    back
}

/// Bob's events as (event id, type, ring id); panics on a duplicate event id.
fn ledger(socket: &str, frames: &[serde_json::Value]) -> Vec<(String, String, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut events = Vec::new();
    for frame in frames {
        let kind = frame["type"].as_str().unwrap_or_default();
        if kind != REQUESTED && kind != DECLINED {
            continue;
        }
        let id = frame["event"]["id"].as_str().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "{socket} got event {id} twice");
        let ring = frame["data"]["videochatRequestId"]
            .as_str()
            .unwrap()
            .to_owned();
        events.push((id, kind.to_owned(), ring));
    }
    events
}

/// Bob has a socket on each gateway, each gateway on its own replica. Every event for him is
/// pushed straight to one socket (by the replica that committed it) and read from the outbox
/// for the other (by the other replica's follower), and, across a replica restart, replayed
/// from the outbox to a reattaching gateway that had already been pushed part of it. Each socket
/// must see every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_each_socket_once_whether_pushed_or_read_from_the_outbox() {
    const ROUNDS: usize = 6;
    let Sides {
        db,
        first,
        first_addr,
        second,
        gateway_one,
        ws_one,
        http_one,
        gateway_two,
        ws_two,
    } = Sides::start().await;

    let mut bob_one = connect(&ws_one, "bob").await;
    let mut bob_two = connect(&ws_two, "bob").await;
    let mut on_one = Vec::new();
    let mut on_two = Vec::new();
    for i in 0..2 {
        on_one.push(connect(&ws_one, &format!("caller-one-{i}")).await);
        on_two.push(connect(&ws_two, &format!("caller-two-{i}")).await);
    }
    let mut rings = Vec::new();

    // Both replicas commit events for bob at once.
    let mut callers = round(
        on_one.into_iter().chain(on_two).collect(),
        ROUNDS,
        &mut rings,
    )
    .await;
    let mut on_two = callers.split_off(2);
    let on_one = callers;

    // Replica one stops: gateway one (bob's first socket) is detached while replica two
    // commits more of his events.
    first.stop().await;
    on_two = round(on_two, ROUNDS, &mut rings).await;

    // Replica one returns; gateway one reattaches and replays from the outbox while replica two
    // keeps committing bob's events (which replica one's follower pushes as they come, so the
    // replay and the live push overlap).
    let listener = TcpListener::bind(first_addr).await.expect("rebind");
    let first = replica(&db.url, listener).await;
    let reattached = CancellationToken::new();
    let busy: Vec<_> = on_two
        .into_iter()
        .map(|mut caller| {
            let reattached = reattached.clone();
            tokio::spawn(async move {
                let mut made = Vec::new();
                while !reattached.is_cancelled() {
                    let (back, ring) = ring_and_cancel(caller, 1).await;
                    caller = back;
                    made.extend(ring);
                }
                (caller, made)
            })
        })
        .collect();
    until_ready(http_one).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    reattached.cancel();
    let mut callers = on_one;
    for task in busy {
        let (caller, made) = task.await.expect("caller ran");
        rings.extend(made);
        callers.push(caller);
    }
    // And then everyone at once again.
    round(callers, ROUNDS, &mut rings).await;

    let one = ledger(
        "bob's first socket",
        &bob_one.drain(Duration::from_secs(2)).await,
    );
    let two = ledger(
        "bob's second socket",
        &bob_two.drain(Duration::from_secs(2)).await,
    );
    assert!(rings.len() > 4 * ROUNDS + 2 * ROUNDS + 4 * ROUNDS);
    for (socket, events) in [("first", &one), ("second", &two)] {
        for kind in [REQUESTED, DECLINED] {
            let mut got: Vec<&str> = events
                .iter()
                .filter(|(_, k, _)| k == kind)
                .map(|(_, _, ring)| ring.as_str())
                .collect();
            got.sort_unstable();
            let mut want: Vec<&str> = rings.iter().map(String::as_str).collect();
            want.sort_unstable();
            assert_eq!(
                got, want,
                "bob's {socket} socket: {kind} per ring, once each"
            );
        }
    }
    // Both sockets are one user's: the same events under the same ids.
    let ids = |events: &[(String, String, String)]| {
        let mut ids: Vec<String> = events.iter().map(|(id, _, _)| id.clone()).collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(ids(&one), ids(&two));

    for part in [gateway_one, gateway_two, first, second] {
        part.stop().await;
    }
}

/// Alice's gateway goes away while her ring to bob is live; bob declines meanwhile. When alice
/// reconnects through another gateway a moment later, she is told how her call ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initiator_whose_gateway_died_learns_the_outcome_after_reconnecting() {
    let Sides {
        db: _db,
        first,
        first_addr: _,
        second,
        gateway_one,
        ws_one,
        http_one: _,
        gateway_two,
        ws_two,
    } = Sides::start().await;

    let mut alice = connect(&ws_one, "alice").await;
    let mut bob = connect(&ws_two, "bob").await;
    let ring = ring(&mut alice, &mut bob).await;
    let stopping = tokio::spawn(gateway_one.stop());
    assert_eq!(alice.closed_by_server().await, Some(1012));
    stopping.await.unwrap();
    ok(&bob
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": ring }),
        )
        .await);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut alice = connect(&ws_two, "alice").await;
    let declined = alice.event(DECLINED).await;
    assert_eq!(declined["data"]["videochatRequestId"], ring);
    assert_eq!(declined["data"]["reason"], "declined");
    alice.no_event(DECLINED, Duration::from_millis(300)).await;

    for part in [gateway_two, first, second] {
        part.stop().await;
    }
}

/// A gateway whose presence lease ran out while it lived (its heartbeats could not be recorded,
/// e.g. a database outage longer than the lease) has its sockets swept; at its next heartbeat
/// it is told to attach again, which restores them: its users are reachable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_lease_lapsed_is_made_to_reattach_and_its_users_return() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let _alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;

    // What the sweep does to a gateway whose lease ran out.
    {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
        sqlx::query("DELETE FROM connections")
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query("DELETE FROM gateways")
            .execute(&mut db)
            .await
            .unwrap();
    }
    refused(
        &mut bob,
        "videochat:requestDirectVideochat",
        json!({ "targetUser": "alice" }),
        10011,
    )
    .await;

    // Within a heartbeat (a quarter of the 6 s lease) and a reattach, alice is back.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answer = bob
            .request(
                "videochat:requestDirectVideochat",
                json!({ "targetUser": "alice" }),
            )
            .await;
        if answer["error"]["code"] == 0 {
            break;
        }
        assert_eq!(answer["error"]["code"], 10011, "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}

/// How many accepts replicas of this process decided from memory, by result.
fn accepts_from_memory(result: &str) -> f64 {
    local_metric(
        "videochat_accepts_from_memory_total",
        &format!("result=\"{result}\""),
    )
}

/// A replica decides an accept of a ring it rang from memory; when another replica ended that
/// ring meanwhile, the write finds it no longer ringing and the accept is decided again from the
/// database: refused, nothing written, nobody told it was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_ended_through_another_replica_is_not_accepted_from_memory() {
    let sides = Sides::start().await;
    // alice and bob on gateway one (replica one, which rings and remembers); alice also on
    // gateway two (replica two).
    let mut alice = connect(&sides.ws_one, "alice").await;
    let mut bob = connect(&sides.ws_one, "bob").await;
    let mut alice_elsewhere = connect(&sides.ws_two, "alice").await;

    let accepted_before = accepts_from_memory("accepted");
    let first = ring(&mut alice, &mut bob).await;
    accept(&mut alice, &mut bob, &first).await;
    assert!(
        accepts_from_memory("accepted") > accepted_before,
        "an accept on the replica that rang is decided from memory"
    );

    let stale_before = accepts_from_memory("stale");
    let second = ring(&mut alice, &mut bob).await;
    // alice cancels it from her other device, through replica two.
    ok(&alice_elsewhere
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": second }),
        )
        .await);
    assert_eq!(bob.event(DECLINED).await["data"]["reason"], "cancelled");
    // bob's accept reaches replica one, which still remembers the ring as ringing.
    let answer = bob
        .request(
            "videochat:acceptVideochatRequest",
            json!({ "videochatRequestId": second }),
        )
        .await;
    assert_eq!(answer["error"]["status"], true, "refused: {answer}");
    assert_eq!(answer["error"]["code"], 10014, "not pending: {answer}");
    assert!(answer["data"].get("token").is_none(), "{answer}");
    assert!(
        accepts_from_memory("stale") > stale_before,
        "the write found the ring ended and the accept was decided again"
    );
    alice
        .no_event(DIRECT_ACCEPTED, Duration::from_millis(300))
        .await;
    let status: (String,) = sqlx::query_as("SELECT status FROM videochat_requests WHERE id = $1")
        .bind(second.as_str().unwrap())
        .fetch_one(&sqlx::PgPool::connect(&sides.db.url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(status.0, "cancelled");

    for part in [
        sides.gateway_one,
        sides.gateway_two,
        sides.first,
        sides.second,
    ] {
        part.stop().await;
    }
}
