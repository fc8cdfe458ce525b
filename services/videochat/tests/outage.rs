//! Postgres goes away and comes back (a private server of the test's own, crashed with
//! `pg_ctl -m immediate`): a request sent during a short outage is answered once the database is
//! back (latency, not an error), and rings that fell due during the outage end within a second
//! of its return.

mod common;

use std::time::{Duration, Instant};

use common::private_pg::PrivatePg;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_costs_latency_and_rings_due_meanwhile_end_within_a_second_of_its_return()
{
    let pg = PrivatePg::start_new().await;
    let app = TestApp::spawn_with(Backend::Sqlite, |_, handshake| {
        handshake.database_url = pg.url();
        handshake.ring_timeout_s = 2.0;
    })
    .await;
    let mut alice = app.connect("alice").await;
    let mut bob = app.connect("bob").await;
    let mut carol = app.connect("carol").await;
    let due = ring(&mut alice, &mut bob).await;

    pg.stop_immediate().await;
    // The ring falls due while the database is down; meanwhile carol calls bob.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let id = carol.fresh_id();
    carol
        .send_text(
            json!({
                "type": "videochat:requestDirectVideochat",
                "data": { "targetUser": "bob" },
                "event": { "id": id, "date": 1_764_000_000_000i64 },
            })
            .to_string(),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    pg.start().await;
    let back = Instant::now();
    let ended = alice.event(DECLINED).await;
    let ended_after = back.elapsed();
    assert_eq!(ended["data"]["videochatRequestId"], due);
    assert_eq!(ended["data"]["reason"], "timeout");
    assert!(
        ended_after < Duration::from_secs(1),
        "the ring that fell due during the outage ended {ended_after:?} after the database returned"
    );
    println!("ring due during the outage ended {ended_after:?} after Postgres returned");

    // Carol's request, sent during the outage, was answered — not refused — once it was back.
    let answer = carol.response_to(&id).await;
    let answered_after = back.elapsed();
    let ring_id = ok(&answer)["videochatRequestId"].clone();
    println!("request sent during the outage answered {answered_after:?} after Postgres returned");
    assert_eq!(
        bob.event(REQUESTED).await["data"]["videochatRequestId"],
        ring_id
    );
    // And everything works as before.
    ok(&bob
        .request(
            "videochat:declineVideochatRequest",
            json!({ "videochatRequestId": ring_id }),
        )
        .await);
    app.stop().await;
}
