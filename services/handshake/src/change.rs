//! The seam between the state machine and the store: what a decision reads ([`Facts`]) and what
//! it writes ([`Change`]).
//!
//! A handshake operation is load → decide → write. The store loads the facts an operation needs
//! in one query; [`crate::machine`] decides with no I/O at all; the store writes the change, its
//! events and the idempotency record atomically (one statement on Postgres). The read and the
//! write are not one transaction: the write carries guards instead — a ring must still be pending
//! (and still ringing) to be answered, a pair may hold one pending ring, a key one record — and a
//! failed guard sends the operation back to load and decide again on fresher facts. Nothing is
//! locked while the service thinks, and a handshake costs two statements per operation.

use crate::domain::{
    IdempotencyKey, Outgoing, Participant, PushDevice, RequestId, RequestStatus, UserId,
    UserProfile, Videochat, VideochatRequest,
};

/// What was answered the first time a user sent an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub user_id: UserId,
    pub key: IdempotencyKey,
    /// The operation's name, so a key reused for another operation is noticed.
    pub operation: String,
    pub outcome: RecordedOutcome,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordedOutcome {
    /// The reply, serialized.
    Reply(Vec<u8>),
    /// An application error: the contract code and message.
    Error { code: i32, message: String },
}

impl RecordedOutcome {
    /// The outcome as the record's columns: (reply, error code, error message).
    pub fn columns(&self) -> (Option<&[u8]>, Option<i64>, Option<&str>) {
        match self {
            RecordedOutcome::Reply(reply) => (Some(reply.as_slice()), None, None),
            RecordedOutcome::Error { code, message } => {
                (None, Some(i64::from(*code)), Some(message.as_str()))
            }
        }
    }
}

/// What the store knows that an operation needs, as of one read. Each operation's query fills
/// the fields it needs and leaves the others empty.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The first answer under the operation's idempotency key, if there was one.
    pub idempotency: Option<IdempotencyRecord>,
    /// Profiles of the users involved (the actor, the target or the initiator).
    pub users: Vec<UserProfile>,
    /// Whether the target has a socket on a gateway with a live presence lease.
    pub target_available: bool,
    /// The ring the operation is about: by id (accept, decline, merge), the pending ring between
    /// the pair (request), or the pending invite of the target (invite).
    pub request: Option<VideochatRequest>,
    /// The videochat the operation is about (invite, merge, accepting an invite).
    pub videochat: Option<Videochat>,
    /// Participant rows of that videochat for the users involved (is the actor in it? the
    /// target?), of those in it now.
    pub members: Vec<Participant>,
    /// Participant rows of the users involved who left the videochat's room (they come back
    /// with the same `uid`).
    pub former: Vec<Participant>,
    /// The first participants' profiles, in joining order, for a ring's `participants` (those
    /// in the room now).
    pub participants: Vec<UserProfile>,
    /// How many participants the videochat has in the room now.
    pub participant_count: u32,
    /// The highest `uid` given in the videochat (the next participant gets the one after).
    pub max_uid: u32,
    /// How many rings the actor has ringing now, direct and invites (request, invite): the
    /// pending-rings limit.
    pub pending_outgoing: u32,
    /// How many invites into the videochat were made in the last
    /// [`crate::machine::INVITE_WINDOW_MS`] (invite): the invites-per-minute limit.
    pub recent_invites: u32,
    /// The target's devices registered for push (request, invite). The service leaves this
    /// empty unless a push webhook is configured, so without one an unavailable target is
    /// refused exactly as before.
    pub target_devices: Vec<PushDevice>,
    /// The devices the ring in `request` was handed to push for (its `push.ring`); `None` if
    /// it was not pushed. Its end sends them a `push.cancel`.
    pub request_pushed_to: Option<Vec<PushDevice>>,
}

impl Facts {
    pub fn user(&self, id: &UserId) -> Option<&UserProfile> {
        self.users.iter().find(|u| &u.id == id)
    }

    /// The user's profile, or one that knows only the id (a user nobody described yet).
    pub fn profile(&self, id: &UserId) -> UserProfile {
        self.user(id)
            .cloned()
            .unwrap_or_else(|| UserProfile::bare(id.clone()))
    }

    pub fn member(&self, id: &UserId) -> Option<&Participant> {
        self.members.iter().find(|p| &p.user_id == id)
    }

    pub fn former(&self, id: &UserId) -> Option<&Participant> {
        self.former.iter().find(|p| &p.user_id == id)
    }

    /// The target can be rung: a live socket, or a device the push sender can wake.
    pub fn target_reachable(&self) -> bool {
        self.target_available || !self.target_devices.is_empty()
    }
}

/// A ring moving out of `pending`. The whole change is written only if this transition happens:
/// if someone answered the ring meanwhile, nothing is written and the operation is decided again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    pub request: RequestId,
    pub status: RequestStatus,
    /// Also require that the ring still rings at this instant (answering a ring whose timeout
    /// passed is refused even before the expiry sweep has marked it).
    pub ringing_at: Option<i64>,
    /// The videochat a direct ring led to (accepted: the new one; merged: the one joined),
    /// remembered on the ring for its history.
    pub videochat: Option<crate::domain::VideochatId>,
}

/// Everything one operation writes, with the events it causes.
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub finish: Option<Finish>,
    pub new_request: Option<VideochatRequest>,
    pub new_videochat: Option<Videochat>,
    pub new_participants: Vec<Participant>,
    /// Participants who had left the room and are let back in (same `uid`, same rights).
    pub rejoined: Vec<Participant>,
    pub events: Vec<Outgoing>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.finish.is_none()
            && self.new_request.is_none()
            && self.new_videochat.is_none()
            && self.new_participants.is_empty()
            && self.rejoined.is_empty()
            && self.events.is_empty()
    }
}
