//! What a newly registered socket is owed besides live events: the user's events it has not
//! seen, or — when those are gone — a snapshot to resynchronise from.
//!
//! A socket starts after the user's newest position at registration (`last_seq`); live events
//! after it arrive through the link. Before that point it is owed the events after
//!
//! - the position its client says it saw last (`lastEventId`), if it sent one, or
//! - the user's *seen* position: the newest one some gateway reported delivered to some socket
//!   of the user. Events due while the user had no socket lie after it, so a user who was away
//!   (a dead gateway, a phone between networks) gets them on the next socket, in order.
//!
//! Positions are contiguous per user, so a range is complete exactly when it holds
//! `through - after` events; fewer means the outbox pruned some (older than its retention),
//! and the client is sent a snapshot instead. So is a client whose range is longer than
//! [`MAX_MISSED`], or that claims a position the user never reached.

use videochat_proto::v1 as pb;

use super::stored_to_pb;
use crate::domain::UserId;
use crate::grpc::convert::{missed_calls_to_pb, ring_to_pb, snapshot_to_pb};
use crate::store::{EventRange, Registration, Store, StoreResult};

/// The most events replayed to one socket; beyond, a snapshot is cheaper and clearer.
pub const MAX_MISSED: u64 = 1_000;

/// What one socket is owed, decided from its registration alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing before its start.
    Nothing,
    /// The user's events in `(after, through]`.
    Replay { after: u64, through: u64 },
    /// A snapshot instead of events.
    Resync,
}

pub fn plan(registration: &Registration, resume_after: Option<u64>) -> Plan {
    let after = resume_after.unwrap_or(registration.seen_seq);
    let through = registration.last_seq;
    if after > through {
        // A position the user never reached (a client from before a restore, or made up).
        return if resume_after.is_some() {
            Plan::Resync
        } else {
            Plan::Nothing
        };
    }
    if after == through {
        Plan::Nothing
    } else if through - after > MAX_MISSED {
        Plan::Resync
    } else {
        Plan::Replay { after, through }
    }
}

/// A socket being registered: whose, where its client resumes, and its registration.
pub struct Opening<'a> {
    pub user: &'a UserId,
    pub resume_after: Option<u64>,
    pub registration: &'a Registration,
}

/// What to send a socket before its live events.
#[derive(Default)]
pub struct Owed {
    pub missed: Vec<pb::Event>,
    pub rings: Vec<pb::VideochatRequested>,
    pub resync: Option<pb::Resync>,
    /// Calls the user missed since they last listed their calls (`videochat:missedCalls`).
    pub missed_calls: Option<pb::MissedCalls>,
}

/// Works out what each socket is owed: one read of the outbox for the whole batch, and a
/// snapshot per socket that must resynchronise.
pub async fn owed(
    store: &dyn Store,
    openings: &[Opening<'_>],
    now_ms: i64,
) -> StoreResult<Vec<Owed>> {
    let plans: Vec<Plan> = openings
        .iter()
        .map(|o| plan(o.registration, o.resume_after))
        .collect();
    let ranges: Vec<EventRange> = openings
        .iter()
        .zip(&plans)
        .filter_map(|(opening, plan)| match plan {
            Plan::Replay { after, through } => Some(EventRange {
                user: opening.user.clone(),
                after: *after,
                through: *through,
            }),
            _ => None,
        })
        .collect();
    let stored = if ranges.is_empty() {
        Vec::new()
    } else {
        store.events_in(&ranges).await?
    };
    let mut owed = Vec::with_capacity(openings.len());
    // What is sent now counts as seen: a second socket opening a moment later is not owed it
    // again (its user's first socket has it).
    let mut seen = Vec::new();
    for (opening, plan) in openings.iter().zip(plans) {
        if plan != Plan::Nothing {
            seen.push((opening.user.clone(), opening.registration.last_seq));
        }
        let missed: Vec<pb::Event> = match plan {
            Plan::Replay { after, through } => stored
                .iter()
                .filter(|e| &e.recipient == opening.user && e.seq > after && e.seq <= through)
                .cloned()
                .filter_map(stored_to_pb)
                .collect(),
            _ => Vec::new(),
        };
        let complete = match plan {
            Plan::Replay { after, through } => missed.len() as u64 == through - after,
            Plan::Nothing => true,
            Plan::Resync => false,
        };
        if !complete {
            metrics::counter!("videochat_resyncs_total").increment(1);
            let snapshot = store.snapshot(opening.user, now_ms).await?;
            owed.push(Owed {
                resync: Some(snapshot_to_pb(&snapshot)),
                ..Owed::default()
            });
            continue;
        }
        metrics::counter!("videochat_events_missed_replayed_total").increment(missed.len() as u64);
        // A client that resumes knows the rings it saw; a fresh one is shown the live rings,
        // except those whose ring event it is being sent anyway.
        let rings = if opening.resume_after.is_some() {
            Vec::new()
        } else {
            opening
                .registration
                .rings
                .iter()
                .filter(|ring| {
                    !missed.iter().any(|e| {
                        matches!(&e.kind, Some(pb::event::Kind::VideochatRequested(r))
                            if r.videochat_request_id == ring.request_id.as_str())
                    })
                })
                .map(ring_to_pb)
                .collect()
        };
        owed.push(Owed {
            missed,
            rings,
            ..Owed::default()
        });
    }
    store.mark_seen(&seen).await?;
    let mut users: Vec<UserId> = openings.iter().map(|o| o.user.clone()).collect();
    users.sort_unstable();
    users.dedup();
    let missed_calls = store.missed_calls(&users, now_ms).await?;
    for (opening, owed) in openings.iter().zip(owed.iter_mut()) {
        owed.missed_calls = missed_calls
            .iter()
            .find(|(user, _, _)| user == opening.user)
            .map(|(_, count, latest)| missed_calls_to_pb(*count, latest));
    }
    Ok(owed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(last_seq: u64, seen_seq: u64) -> Registration {
        Registration {
            refused: false,
            last_seq,
            seen_seq,
            rings: Vec::new(),
        }
    }

    #[test]
    fn a_socket_is_owed_what_came_after_the_seen_or_resumed_position() {
        assert_eq!(plan(&registered(0, 0), None), Plan::Nothing);
        assert_eq!(plan(&registered(7, 7), None), Plan::Nothing);
        assert_eq!(
            plan(&registered(7, 4), None),
            Plan::Replay {
                after: 4,
                through: 7
            }
        );
        // The client's own position wins over the seen one, either way.
        assert_eq!(
            plan(&registered(7, 4), Some(6)),
            Plan::Replay {
                after: 6,
                through: 7
            }
        );
        assert_eq!(
            plan(&registered(7, 7), Some(2)),
            Plan::Replay {
                after: 2,
                through: 7
            }
        );
        assert_eq!(plan(&registered(7, 4), Some(7)), Plan::Nothing);
    }

    #[test]
    fn too_long_a_gap_or_an_unknown_position_resynchronises() {
        assert_eq!(plan(&registered(5_000, 0), None), Plan::Resync);
        assert_eq!(
            plan(&registered(5_000, 4_000), None),
            Plan::Replay {
                after: 4_000,
                through: 5_000
            }
        );
        assert_eq!(plan(&registered(7, 0), Some(9)), Plan::Resync);
        // A seen position ahead of the mailbox (a restore) is not the client's claim: no resync.
        assert_eq!(plan(&registered(7, 9), None), Plan::Nothing);
    }
}
