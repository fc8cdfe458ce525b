//! Direct rings this replica rang that may still ring, kept with what accepting one needs, so
//! that the common answer — the callee accepts on a device whose gateway is attached to this
//! same replica — is decided without reading the ring back from the database.
//!
//! The database stays the authority. The accept's write finishes the ring only if it is still
//! pending and has not timed out (its guard), so a ring answered, cancelled or timed out
//! meanwhile — by another replica, or before this one forgot it — makes the write a no-op, and
//! the service then loads the facts and decides again, as after any stale read. An accept whose
//! remembered facts lead to a refusal is decided again from the database too, so a refusal is
//! always the one the database's state gives. A retried accept whose first try committed finds
//! the ring no longer pending and is answered from its idempotency record after that reload.
//!
//! The one thing an accept takes from here that the database might say differently: the two
//! users' profiles as they were when the ring started (the names in the tokens, the webhooks'
//! payloads). A profile changed during the ring's seconds shows from the next call on.
//!
//! Why: the read was a statement of its own on the accept's path — on Postgres one of the four
//! per handshake, and a round trip between the accept and the `videochatAccepted` that stops the
//! callee's other devices ringing.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::change::Facts;
use crate::domain::{RequestId, RequestKind, UserProfile, VideochatRequest};

/// Most rings remembered at once; past it, new rings are not remembered (their accepts read the
/// database, as they would on another replica).
const MAX_RINGS: usize = 100_000;

struct Entry {
    ring: VideochatRequest,
    users: Vec<UserProfile>,
}

#[derive(Default)]
pub struct Ringing {
    rings: Mutex<HashMap<RequestId, Entry>>,
}

impl Ringing {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RequestId, Entry>> {
        // Every critical section is one insert, lookup or removal: a poisoned map is consistent.
        self.rings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers a direct ring just written, with the profiles of its two users.
    pub fn remember(&self, ring: &VideochatRequest, users: &[UserProfile], now_ms: i64) {
        if ring.kind != RequestKind::Direct || !ring.is_ringing(now_ms) {
            return;
        }
        let mut rings = self.lock();
        if rings.len() >= MAX_RINGS {
            rings.retain(|_, entry| entry.ring.is_ringing(now_ms));
            if rings.len() >= MAX_RINGS {
                return;
            }
        }
        rings.insert(
            ring.id.clone(),
            Entry {
                ring: ring.clone(),
                users: users.to_vec(),
            },
        );
        count(&rings);
    }

    /// Forgets a ring (it ended, or the database said something else about it).
    pub fn forget(&self, id: &RequestId) {
        let mut rings = self.lock();
        if rings.remove(id).is_some() {
            count(&rings);
        }
    }

    /// The facts of accepting `id` at `now_ms`, if this replica rang it and it still rings.
    pub fn accept_facts(&self, id: &RequestId, now_ms: i64) -> Option<Facts> {
        let mut rings = self.lock();
        let entry = rings.get(id)?;
        if !entry.ring.is_ringing(now_ms) {
            rings.remove(id);
            count(&rings);
            return None;
        }
        Some(Facts {
            users: entry.users.clone(),
            request: Some(entry.ring.clone()),
            ..Facts::default()
        })
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// How many rings are remembered (`videochat_rings_remembered`).
fn count(rings: &HashMap<RequestId, Entry>) {
    metrics::gauge!("videochat_rings_remembered").set(rings.len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RequestStatus, UserId};
    use crate::engine::EngineKind;

    fn ring(id: &str, kind: RequestKind, expires_at_ms: i64) -> VideochatRequest {
        VideochatRequest {
            id: RequestId::parse(id).unwrap(),
            kind,
            initiator: UserId::parse("alice").unwrap(),
            target: UserId::parse("bob").unwrap(),
            videochat_id: None,
            engine: EngineKind::Livekit,
            status: RequestStatus::Pending,
            created_at_ms: 0,
            expires_at_ms,
        }
    }

    #[test]
    fn a_remembered_ring_gives_the_facts_of_accepting_it_until_it_times_out_or_ends() {
        let ringing = Ringing::default();
        let direct = ring("vcr_1", RequestKind::Direct, 1_000);
        ringing.remember(&direct, &[], 10);
        let facts = ringing.accept_facts(&direct.id, 999).expect("remembered");
        assert_eq!(facts.request.as_ref(), Some(&direct));
        assert!(facts.idempotency.is_none() && facts.request_pushed_to.is_none());
        assert!(
            ringing.accept_facts(&direct.id, 1_000).is_none(),
            "timed out"
        );
        assert!(ringing.is_empty(), "and forgotten");

        ringing.remember(&direct, &[], 10);
        ringing.forget(&direct.id);
        assert!(ringing.accept_facts(&direct.id, 10).is_none(), "ended");
    }

    #[test]
    fn only_direct_rings_still_ringing_are_remembered() {
        let ringing = Ringing::default();
        ringing.remember(&ring("vcr_2", RequestKind::Invite, 1_000), &[], 10);
        ringing.remember(&ring("vcr_3", RequestKind::Direct, 5), &[], 10);
        assert!(ringing.is_empty());
    }
}
