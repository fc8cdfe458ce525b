//! Processes killed the hard way (`SIGKILL`: no drain, no goodbye), as a user would live it.
//! Real `videochat handshake` and `videochat gateway` processes over one fresh Postgres
//! database, driven over real WebSockets.
//!
//! - A gateway dies while its user's ring is live; the call is declined meanwhile; the user,
//!   reconnecting through another gateway 0.1 s later, is told. A user of the dead gateway who
//!   never comes back stops counting as present when the gateway's lease runs out.
//! - A socket closed while the only replica is down (the close cannot be recorded) stops counting
//!   as present once the replica is back: the gateway's reattach states its complete socket set.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::{free_port, spawn_gateway, spawn_replica};
use common::*;
use serde_json::json;
use tokio::process::Child;
use tokio::time::Instant;

/// Short, so that a dead gateway's ghost presence ends within the test.
const LEASE_MS: u64 = 1_500;

/// A child process that is killed (SIGKILL) when dropped.
struct Process {
    addr: SocketAddr,
    child: Child,
}

impl Process {
    async fn replica(database_url: &str, addr: SocketAddr) -> Self {
        let lease = LEASE_MS.to_string();
        let child = spawn_replica(
            database_url,
            addr,
            &[("VIDEOCHAT_PRESENCE_LEASE_MS", &lease)],
        )
        .await;
        Self { addr, child }
    }

    async fn gateway(replica: SocketAddr) -> Self {
        let addr = free_port().await;
        let child = spawn_gateway(addr, &[replica], &[]).await;
        Self { addr, child }
    }

    fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    async fn kill(mut self) -> SocketAddr {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
        self.addr
    }
}

async fn connect(url: &str, user: &str) -> Client {
    Client::connect(url, user, &TestApp::token(user)).await
}

/// Calls `target` until the answer is `code` (or the deadline passes); returns how long it took.
async fn until_refused(caller: &mut Client, target: &str, code: i64) -> Duration {
    let started = Instant::now();
    loop {
        let answer = caller
            .request(
                "videochat:requestDirectVideochat",
                json!({ "targetUser": target }),
            )
            .await;
        if answer["error"]["code"] == code {
            return started.elapsed();
        }
        if answer["error"]["code"] == 0 {
            // It rang a ghost: withdraw the ring and try again.
            let ring = answer["data"]["videochatRequestId"].clone();
            ok(&caller
                .request(
                    "videochat:declineVideochatRequest",
                    json!({ "videochatRequestId": ring }),
                )
                .await);
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{target} still counts as present: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_loses_its_users_nothing_and_leaves_no_ghost() {
    let db = TestDb::new(Backend::Postgres).await;
    let replica = Process::replica(&db.url, free_port().await).await;
    let doomed = Process::gateway(replica.addr).await;
    let survivor = Process::gateway(replica.addr).await;

    let mut alice = connect(&doomed.ws(), "alice").await;
    let _erin = connect(&doomed.ws(), "erin").await;
    let mut bob = connect(&survivor.ws(), "bob").await;
    let mut dave = connect(&survivor.ws(), "dave").await;
    let call = ring(&mut alice, &mut bob).await;

    doomed.kill().await;
    ok(&bob
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": call }),
        )
        .await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut alice = connect(&survivor.ws(), "alice").await;
    let declined = alice.event(DECLINED).await;
    assert_eq!(declined["data"]["videochatRequestId"], call);
    assert_eq!(declined["data"]["reason"], "declined");
    alice.no_event(DECLINED, Duration::from_millis(300)).await;

    // erin never comes back: once the dead gateway's lease ran out, she is unavailable.
    let took = until_refused(&mut dave, "erin", 10011).await;
    println!(
        "a killed gateway's user stopped counting as present after {took:?} (lease {LEASE_MS} ms)"
    );
    assert!(took < Duration::from_millis(LEASE_MS + 2_000), "{took:?}");
    drop(survivor);
    drop(replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_closed_during_a_replica_outage_stops_counting_as_present() {
    let db = TestDb::new(Backend::Postgres).await;
    let replica = Process::replica(&db.url, free_port().await).await;
    let gateway = Process::gateway(replica.addr).await;
    let alice = connect(&gateway.ws(), "alice").await;
    let mut bob = connect(&gateway.ws(), "bob").await;

    let addr = replica.kill().await;
    // The service cannot hear of this close.
    alice.close().await;
    let replica = Process::replica(&db.url, addr).await;
    until_ready(gateway.addr).await;
    let took = until_refused(&mut bob, "alice", 10011).await;
    println!(
        "a socket closed during the outage stopped counting {took:?} after the gateway reattached"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(gateway);
    drop(replica);
}
