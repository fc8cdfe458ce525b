//! A pair of users and one handshake between them, shared by the `flat` and `paced` scenarios.
//!
//! The caller rings the callee, every callee socket must ring, the first callee socket accepts,
//! the caller must get its credentials and every other callee socket must stop ringing
//! (`videochatAccepted`). Each wait is bounded by the client timeout; each latency runs from the
//! moment a frame was handed to the socket to the moment its effect was read on the other side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::client::{Client, Connector};
use crate::protocol::{ACCEPT, ACCEPTED, CREDENTIALS, REQUEST_DIRECT, REQUESTED};

/// Sockets opened at once while a scenario sets up.
const CONNECT_CONCURRENCY: usize = 64;

pub struct Pair {
    caller: Client,
    /// Every socket of the callee, all the same user; the first one accepts.
    callees: Vec<Client>,
    callee_id: String,
}

/// One handshake's latencies.
#[derive(Clone)]
pub struct Sample {
    /// Request sent → its response (the ring id).
    pub request: Duration,
    /// Request sent → the first callee socket rings.
    pub ring_first: Duration,
    /// Request sent → the last callee socket rings.
    pub ring_all: Duration,
    /// Accept sent → the acceptor's response (its credentials).
    pub accept: Duration,
    /// Accept sent → the caller has its credentials.
    pub credentials: Duration,
    /// Accept sent on the first callee socket → `videochatAccepted` on the last other one.
    pub stop_ringing: Option<Duration>,
}

/// Opens `count` pairs whose callees have `callee_sockets` sockets each. Any failure fails the
/// setup: a scenario with missing pairs would not measure what it says.
pub async fn connect(
    connector: &Arc<Connector>,
    count: usize,
    callee_sockets: usize,
) -> anyhow::Result<Vec<Pair>> {
    futures_util::stream::iter(0..count)
        .map(|index| {
            let connector = connector.clone();
            async move {
                let caller_id = connector.user("caller", index);
                let callee_id = connector.user("callee", index);
                let mut callees = Vec::with_capacity(callee_sockets);
                for _ in 0..callee_sockets {
                    callees.push(connector.connect(&callee_id, None).await?);
                }
                let caller = connector.connect(&caller_id, None).await?;
                anyhow::Ok(Pair {
                    caller,
                    callees,
                    callee_id,
                })
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()
        .context("opening the pairs' sockets")
}

impl Pair {
    pub async fn handshake(&mut self) -> anyhow::Result<Sample> {
        let (id, requested) = self
            .caller
            .request(REQUEST_DIRECT, &json!({ "targetUser": self.callee_id }))
            .await?;
        let (answered, data) = self.caller.response(&id, "the request's response").await?;
        let ring_id = data["videochatRequestId"].clone();
        if !ring_id.is_string() {
            anyhow::bail!("the request's response has no videochatRequestId");
        }
        let outcome = self.answer(requested, answered, &ring_id).await;
        if outcome.is_err() {
            // Best effort, unanswered: a ring left pending would be handed back (same id, no new
            // ring) to this pair's next request and fail it too.
            let _ = self
                .caller
                .request(
                    "videochat:declineVideochatRequest",
                    &json!({ "videochatRequestId": ring_id }),
                )
                .await;
        }
        outcome
    }

    async fn answer(
        &mut self,
        requested: Instant,
        answered: Instant,
        ring_id: &Value,
    ) -> anyhow::Result<Sample> {
        let is_this_ring = |data: &Value| data["videochatRequestId"] == *ring_id;
        let mut rings = Vec::with_capacity(self.callees.len());
        for (n, callee) in self.callees.iter_mut().enumerate() {
            let what = format!("{REQUESTED} on callee socket {}", n + 1);
            rings.push(callee.event(REQUESTED, is_this_ring, &what).await?.0);
        }
        let first_ring = rings.iter().min().copied().unwrap_or(answered);
        let last_ring = rings.iter().max().copied().unwrap_or(answered);

        let acceptor = &mut self.callees[0];
        let (id, accepted) = acceptor
            .request(ACCEPT, &json!({ "videochatRequestId": ring_id }))
            .await?;
        let (accept_answered, _) = acceptor.response(&id, "the accept's response").await?;
        // The credentials event may or may not name the request; when it does, it must be this one.
        let (credentials, _) = self
            .caller
            .event(
                CREDENTIALS,
                |data| data["videochatRequestId"].is_null() || is_this_ring(data),
                CREDENTIALS,
            )
            .await?;
        let mut stopped = None;
        for (n, other) in self.callees.iter_mut().enumerate().skip(1) {
            let what = format!("{ACCEPTED} on callee socket {}", n + 1);
            let (at, _) = other.event(ACCEPTED, is_this_ring, &what).await?;
            stopped = stopped.max(Some(at));
        }
        Ok(Sample {
            request: answered - requested,
            ring_first: first_ring - requested,
            ring_all: last_ring - requested,
            accept: accept_answered - accepted,
            credentials: credentials - accepted,
            stop_ringing: stopped.map(|at| at - accepted),
        })
    }
}
