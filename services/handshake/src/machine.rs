//! The handshake state machine: CONTRACT §4 as code.
//!
//! Each operation reads the [`Facts`] the store loaded for it and returns a [`Decision`]: what it
//! answers and the [`Change`] to write, events included. Nothing here does I/O — not even through
//! a transaction — so every rule is a plain function of what is known, and one obvious place:
//!
//! * [`request`]: ring a user (or return the ring already under way; or, on glare, accept the
//!   ring coming the other way).
//! * [`invite`]: ring a user into a videochat the caller is in.
//! * [`accept`]: only the target, only once; creates the videochat or joins the existing one.
//! * [`decline`]: the target declines, the initiator cancels.
//! * [`merge`]: pull the initiator of a ringing direct request into the caller's videochat.
//! * [`expire`]: a ring that nobody answered in time.
//!
//! Facts can go stale between the read and the write; the change's guards (see
//! [`crate::change`]) catch that, and the service decides again on fresh facts.

use std::time::Duration;

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::change::{Change, Facts, Finish};
use crate::domain::{
    DeclineReason, Event, JoinCredentials, Outgoing, Participant, Permissions, RequestId,
    RequestKind, RequestStatus, Ring, UserId, UserProfile, Videochat, VideochatId, VideochatMode,
    VideochatRequest,
};
use crate::engine::{EngineKind, Engines, Grant};
use crate::error::HandshakeError;

/// How many participants a ring shows (the API text's "max 10").
pub const MAX_RING_PARTICIPANTS: i64 = 10;

/// The window over which invites into one videochat are counted.
pub const INVITE_WINDOW_MS: i64 = 60_000;

/// The service's own limits (CONTRACT §6), each a setting. They bound what one user can make
/// the service do to others — ring 150 people at once, flood a videochat's invitees — and are
/// far above what a person does by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rings one user may have ringing at once (direct and invites): 10017 beyond.
    pub max_pending_rings_per_user: u32,
    /// Invites into one videochat per [`INVITE_WINDOW_MS`]: 10018 beyond.
    pub max_invites_per_videochat_per_min: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pending_rings_per_user: 20,
            max_invites_per_videochat_per_min: 30,
        }
    }
}

/// What the state machine needs besides the facts: the engines, the ring timeout, the limits,
/// the clock.
pub struct Context<'a> {
    pub engines: &'a Engines,
    pub ring_timeout: Duration,
    pub limits: Limits,
    pub now_ms: i64,
}

impl Context<'_> {
    fn expires_at(&self) -> i64 {
        self.now_ms + i64::try_from(self.ring_timeout.as_millis()).unwrap_or(i64::MAX / 2)
    }
}

/// A client's ask, after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    RequestDirect {
        target: UserId,
        engine: Option<EngineKind>,
    },
    Invite {
        target: UserId,
        videochat: VideochatId,
    },
    Accept {
        request: RequestId,
    },
    Decline {
        request: RequestId,
    },
    Merge {
        videochat: VideochatId,
        request: RequestId,
    },
}

impl Command {
    /// One command of every kind, about the given ids: for running every kind's statements
    /// (readying a Postgres connection, plan tests).
    pub fn one_of_each(target: UserId, videochat: VideochatId, request: RequestId) -> [Command; 5] {
        [
            Command::RequestDirect {
                target: target.clone(),
                engine: None,
            },
            Command::Invite {
                target,
                videochat: videochat.clone(),
            },
            Command::Accept {
                request: request.clone(),
            },
            Command::Decline {
                request: request.clone(),
            },
            Command::Merge { videochat, request },
        ]
    }

    /// Stable name, recorded with idempotency keys and used in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::RequestDirect { .. } => "requestDirectVideochat",
            Command::Invite { .. } => "invite",
            Command::Accept { .. } => "acceptVideochatRequest",
            Command::Decline { .. } => "declineVideochatRequest",
            Command::Merge { .. } => "mergeToVideochat",
        }
    }
}

/// What an operation answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reply {
    RequestId(RequestId),
    Credentials(Box<JoinCredentials>),
    Done,
}

/// An answer plus the change to write with it.
#[derive(Debug)]
pub struct Decision {
    pub reply: Reply,
    pub change: Change,
    /// How the ring ended, when this operation ends one (for metrics): status and ring time.
    pub ended: Option<(RequestStatus, i64)>,
}

impl Decision {
    fn answer(reply: Reply) -> Self {
        Self {
            reply,
            change: Change::default(),
            ended: None,
        }
    }

    fn emit(&mut self, recipient: &UserId, event: Event) {
        self.change.events.push(Outgoing {
            recipient: recipient.clone(),
            event,
        });
    }

    /// Moves `ring` out of pending as part of this decision.
    fn finish(&mut self, ring: &VideochatRequest, status: RequestStatus, ringing_at: Option<i64>) {
        self.change.finish = Some(Finish {
            request: ring.id.clone(),
            status,
            ringing_at,
            videochat: None,
        });
    }

    /// Remembers on the finished ring the videochat it led to (a direct ring accepted or
    /// merged), so that history can show the time spent in it.
    fn led_to(&mut self, videochat: &VideochatId) {
        if let Some(finish) = &mut self.change.finish {
            finish.videochat = Some(videochat.clone());
        }
    }
}

/// Decides `command` for `actor` on `facts`.
pub fn decide(
    facts: &Facts,
    ctx: &Context<'_>,
    actor: &UserId,
    command: &Command,
) -> Result<Decision, HandshakeError> {
    match command {
        Command::RequestDirect { target, engine } => request(facts, ctx, actor, target, *engine),
        Command::Invite { target, .. } => invite(facts, ctx, actor, target),
        Command::Accept { .. } => accept(facts, ctx, actor),
        Command::Decline { .. } => decline(facts, ctx, actor),
        Command::Merge { .. } => merge(facts, ctx, actor),
    }
}

/// Ring `target` for a direct videochat.
///
/// One pending direct request per pair: asking again returns the ring under way; if the target
/// already rings the caller (glare), the caller's request accepts that ring instead.
pub fn request(
    facts: &Facts,
    ctx: &Context<'_>,
    actor: &UserId,
    target: &UserId,
    engine: Option<EngineKind>,
) -> Result<Decision, HandshakeError> {
    if actor == target {
        return Err(HandshakeError::InvalidTarget("cannot call yourself"));
    }
    if facts.user(target).is_none() {
        return Err(HandshakeError::TargetUserNotFound);
    }
    let mut decision = Decision::answer(Reply::Done);
    if let Some(existing) = &facts.request {
        if !existing.is_ringing(ctx.now_ms) {
            // Timed out but not yet swept: expire it here so the new ring can take its place.
            decision = expire(ctx, existing);
        } else if &existing.initiator == actor {
            return Ok(Decision::answer(Reply::RequestId(existing.id.clone())));
        } else {
            // Glare: both want the call. Accepting the ring already under way gives one
            // videochat; each side gets its own credentials as an event.
            let mut glare = accept_ringing(facts, ctx, actor, existing)?;
            let reply = std::mem::replace(&mut glare.reply, Reply::RequestId(existing.id.clone()));
            if let Reply::Credentials(credentials) = reply {
                glare.emit(actor, Event::DirectVideochatRequestAccepted(credentials));
            }
            return Ok(glare);
        }
    }
    if !facts.target_reachable() {
        return Err(HandshakeError::TargetUserNotAvailable);
    }
    within_pending_rings(facts, ctx)?;
    let engine = match engine {
        Some(kind) => {
            ctx.engines.get(kind)?;
            kind
        }
        None => ctx.engines.default_kind(),
    };
    let ring = VideochatRequest {
        id: RequestId::generate(),
        kind: RequestKind::Direct,
        initiator: actor.clone(),
        target: target.clone(),
        videochat_id: None,
        engine,
        status: RequestStatus::Pending,
        created_at_ms: ctx.now_ms,
        expires_at_ms: ctx.expires_at(),
    };
    ring_target(&mut decision, facts, ring);
    Ok(decision)
}

/// Ring `target` into the videochat of the facts, of which the caller must be a participant.
pub fn invite(
    facts: &Facts,
    ctx: &Context<'_>,
    actor: &UserId,
    target: &UserId,
) -> Result<Decision, HandshakeError> {
    let videochat = videochat_of_participant(facts, actor)?;
    if actor == target {
        return Err(HandshakeError::InvalidTarget("cannot invite yourself"));
    }
    if facts.user(target).is_none() {
        return Err(HandshakeError::TargetUserNotFound);
    }
    if facts.member(target).is_some() {
        return Err(HandshakeError::InvalidTarget(
            "the user is already in the videochat",
        ));
    }
    let mut decision = Decision::answer(Reply::Done);
    if let Some(existing) = &facts.request {
        if existing.is_ringing(ctx.now_ms) {
            return Ok(Decision::answer(Reply::RequestId(existing.id.clone())));
        }
        decision = expire(ctx, existing);
    }
    if !facts.target_reachable() {
        return Err(HandshakeError::TargetUserNotAvailable);
    }
    within_pending_rings(facts, ctx)?;
    if facts.recent_invites >= ctx.limits.max_invites_per_videochat_per_min {
        return Err(HandshakeError::TooManyInvites(
            ctx.limits.max_invites_per_videochat_per_min,
        ));
    }
    let ring = VideochatRequest {
        id: RequestId::generate(),
        kind: RequestKind::Invite,
        initiator: actor.clone(),
        target: target.clone(),
        videochat_id: Some(videochat.id.clone()),
        engine: videochat.engine,
        status: RequestStatus::Pending,
        created_at_ms: ctx.now_ms,
        expires_at_ms: ctx.expires_at(),
    };
    ring_target(&mut decision, facts, ring);
    Ok(decision)
}

/// A new ring from the actor must leave them within their pending-rings limit. Only new rings
/// count: asking again for a ring under way, or answering one, is never limited.
fn within_pending_rings(facts: &Facts, ctx: &Context<'_>) -> Result<(), HandshakeError> {
    if facts.pending_outgoing >= ctx.limits.max_pending_rings_per_user {
        return Err(HandshakeError::TooManyPendingRings(
            ctx.limits.max_pending_rings_per_user,
        ));
    }
    Ok(())
}

/// Adds `ring` to the decision: the new row, the answer, and the ring shown to the target.
fn ring_target(decision: &mut Decision, facts: &Facts, ring: VideochatRequest) {
    decision.reply = Reply::RequestId(ring.id.clone());
    let shown = Ring {
        request_id: ring.id.clone(),
        user: facts.profile(&ring.initiator),
        participants: facts.participants.clone(),
        counter: facts.participant_count,
        expires_at_ms: ring.expires_at_ms,
        videochat_id: ring.videochat_id.clone(),
    };
    decision.emit(&ring.target, Event::VideochatRequested(Box::new(shown)));
    decision.change.new_request = Some(ring);
}

/// Answer the ring of the facts with yes. Only its target may, and only while it rings.
pub fn accept(
    facts: &Facts,
    ctx: &Context<'_>,
    actor: &UserId,
) -> Result<Decision, HandshakeError> {
    let ring = facts
        .request
        .as_ref()
        .ok_or(HandshakeError::RequestNotFound)?;
    if &ring.target != actor {
        return Err(HandshakeError::NotAllowed(
            "only the user being called may accept",
        ));
    }
    ensure_ringing(ring, ctx)?;
    accept_ringing(facts, ctx, actor, ring)
}

/// Accepts a ring known to be ringing for `actor` (from [`accept`] or glare).
fn accept_ringing(
    facts: &Facts,
    ctx: &Context<'_>,
    actor: &UserId,
    ring: &VideochatRequest,
) -> Result<Decision, HandshakeError> {
    let mut decision = Decision::answer(Reply::Done);
    decision.finish(ring, RequestStatus::Accepted, Some(ctx.now_ms));
    decision.ended = Some((RequestStatus::Accepted, ctx.now_ms - ring.created_at_ms));
    match ring.kind {
        RequestKind::Direct => {
            let videochat = new_videochat(ctx, VideochatMode::Videochat, ring.engine);
            let owner = Participant {
                videochat_id: videochat.id.clone(),
                user_id: ring.initiator.clone(),
                uid: 1,
                permissions: Permissions::owner(),
            };
            let guest = Participant {
                videochat_id: videochat.id.clone(),
                user_id: actor.clone(),
                uid: 2,
                permissions: Permissions::promoted_participant(),
            };
            let for_initiator = credentials(facts, ctx, &videochat, &owner, Some(&ring.id))?;
            let for_acceptor = credentials(facts, ctx, &videochat, &guest, Some(&ring.id))?;
            decision.emit(
                &ring.initiator,
                Event::DirectVideochatRequestAccepted(Box::new(for_initiator)),
            );
            decision.reply = Reply::Credentials(Box::new(for_acceptor));
            decision.change.new_participants = vec![owner, guest];
            decision.led_to(&videochat.id);
            decision.change.new_videochat = Some(videochat);
        }
        RequestKind::Invite => {
            let videochat = facts
                .videochat
                .as_ref()
                .filter(|v| v.ended_at_ms.is_none())
                .ok_or(HandshakeError::VideochatNotFound)?;
            let participant = join(
                &mut decision,
                facts,
                videochat,
                actor,
                invitee_permissions(videochat.mode),
            );
            let for_acceptor = credentials(facts, ctx, videochat, &participant, Some(&ring.id))?;
            decision.reply = Reply::Credentials(Box::new(for_acceptor));
        }
    }
    decision.emit(
        actor,
        Event::VideochatAccepted {
            request_id: ring.id.clone(),
        },
    );
    Ok(decision)
}

/// Answer the ring of the facts with no: the target declines, the initiator cancels. Both sides
/// hear of it.
pub fn decline(
    facts: &Facts,
    ctx: &Context<'_>,
    actor: &UserId,
) -> Result<Decision, HandshakeError> {
    let ring = facts
        .request
        .as_ref()
        .ok_or(HandshakeError::RequestNotFound)?;
    let (status, reason) = if &ring.target == actor {
        (RequestStatus::Declined, DeclineReason::Declined)
    } else if &ring.initiator == actor {
        (RequestStatus::Cancelled, DeclineReason::Cancelled)
    } else {
        return Err(HandshakeError::NotAllowed(
            "only the caller or the user being called may decline",
        ));
    };
    ensure_ringing(ring, ctx)?;
    let mut decision = Decision::answer(Reply::Done);
    decision.finish(ring, status, Some(ctx.now_ms));
    decision.ended = Some((status, ctx.now_ms - ring.created_at_ms));
    notify_both(&mut decision, ring, reason);
    Ok(decision)
}

/// The caller, in the videochat of the facts and rung by a direct request, pulls its initiator
/// into that videochat instead of starting a new one.
pub fn merge(facts: &Facts, ctx: &Context<'_>, actor: &UserId) -> Result<Decision, HandshakeError> {
    let ring = facts
        .request
        .as_ref()
        .ok_or(HandshakeError::RequestNotFound)?;
    if &ring.target != actor {
        return Err(HandshakeError::NotAllowed(
            "only the user being called may merge the call",
        ));
    }
    if ring.kind != RequestKind::Direct {
        return Err(HandshakeError::NotAllowed(
            "only a direct call can be merged into a videochat",
        ));
    }
    ensure_ringing(ring, ctx)?;
    let videochat = videochat_of_participant(facts, actor)?;
    let mut decision = Decision::answer(Reply::Done);
    decision.finish(ring, RequestStatus::Merged, Some(ctx.now_ms));
    decision.led_to(&videochat.id);
    decision.ended = Some((RequestStatus::Merged, ctx.now_ms - ring.created_at_ms));
    let participant = join(
        &mut decision,
        facts,
        videochat,
        &ring.initiator,
        Permissions::promoted_participant(),
    );
    let for_initiator = credentials(facts, ctx, videochat, &participant, Some(&ring.id))?;
    decision.emit(
        &ring.initiator,
        Event::DirectVideochatRequestAccepted(Box::new(for_initiator)),
    );
    decision.emit(
        actor,
        Event::VideochatAccepted {
            request_id: ring.id.clone(),
        },
    );
    Ok(decision)
}

/// A ring nobody answered in time: both sides hear `reason: "timeout"`. Written only if the
/// ring is still pending then (whoever gets there first expires it, once).
pub fn expire(ctx: &Context<'_>, ring: &VideochatRequest) -> Decision {
    let mut decision = Decision::answer(Reply::Done);
    decision.finish(ring, RequestStatus::Expired, None);
    decision.ended = Some((RequestStatus::Expired, ctx.now_ms - ring.created_at_ms));
    notify_both(&mut decision, ring, DeclineReason::Timeout);
    decision
}

/// An invite still ringing when its videochat ended (the engine finished the room): there is
/// nothing left to join, so it is cancelled and both sides hear `reason: "cancelled"`.
pub fn end_invite(ctx: &Context<'_>, ring: &VideochatRequest) -> Decision {
    let mut decision = Decision::answer(Reply::Done);
    decision.finish(ring, RequestStatus::Cancelled, None);
    decision.ended = Some((RequestStatus::Cancelled, ctx.now_ms - ring.created_at_ms));
    notify_both(&mut decision, ring, DeclineReason::Cancelled);
    decision
}

/// Starts a videochat owned by `owner` (for internal services that start conferences).
pub fn create_videochat(
    facts: &Facts,
    ctx: &Context<'_>,
    owner: &UserId,
    mode: VideochatMode,
    engine: Option<EngineKind>,
) -> Result<(JoinCredentials, Change), HandshakeError> {
    let engine = match engine {
        Some(kind) => {
            ctx.engines.get(kind)?;
            kind
        }
        None => ctx.engines.default_kind(),
    };
    if facts.user(owner).is_none() {
        return Err(HandshakeError::TargetUserNotFound);
    }
    let videochat = new_videochat(ctx, mode, engine);
    let participant = Participant {
        videochat_id: videochat.id.clone(),
        user_id: owner.clone(),
        uid: 1,
        permissions: Permissions::owner(),
    };
    let credentials = credentials(facts, ctx, &videochat, &participant, None)?;
    let change = Change {
        new_videochat: Some(videochat),
        new_participants: vec![participant],
        ..Change::default()
    };
    Ok((credentials, change))
}

fn ensure_ringing(ring: &VideochatRequest, ctx: &Context<'_>) -> Result<(), HandshakeError> {
    match ring.status {
        RequestStatus::Pending if ring.is_ringing(ctx.now_ms) => Ok(()),
        // Past its timeout; the expiry sweep is about to tell both sides.
        RequestStatus::Pending => Err(HandshakeError::RequestNotPending(RequestStatus::Expired)),
        other => Err(HandshakeError::RequestNotPending(other)),
    }
}

fn notify_both(decision: &mut Decision, ring: &VideochatRequest, reason: DeclineReason) {
    for user in [&ring.initiator, &ring.target] {
        decision.emit(
            user,
            Event::VideochatDeclined {
                request_id: ring.id.clone(),
                reason,
            },
        );
    }
}

/// The videochat of the facts, if it is still on and `user` is in it; 10015 otherwise (not
/// found and not yours look alike, so ids of other people's videochats cannot be probed). A user
/// who left the room is no longer in it, and a videochat whose room finished is over.
fn videochat_of_participant<'f>(
    facts: &'f Facts,
    user: &UserId,
) -> Result<&'f Videochat, HandshakeError> {
    let videochat = facts
        .videochat
        .as_ref()
        .filter(|v| v.ended_at_ms.is_none())
        .ok_or(HandshakeError::VideochatNotFound)?;
    if facts.member(user).is_none() {
        return Err(HandshakeError::VideochatNotFound);
    }
    Ok(videochat)
}

/// `user` as a participant of the videochat: the rights they have if already in it; back in
/// with their old `uid` and rights if they had left; otherwise a new participant with the next
/// free `uid`. Joining is part of the decision's change.
fn join(
    decision: &mut Decision,
    facts: &Facts,
    videochat: &Videochat,
    user: &UserId,
    permissions: Permissions,
) -> Participant {
    if let Some(existing) = facts.member(user) {
        return existing.clone();
    }
    if let Some(former) = facts.former(user) {
        decision.change.rejoined.push(former.clone());
        return former.clone();
    }
    let participant = Participant {
        videochat_id: videochat.id.clone(),
        user_id: user.clone(),
        uid: facts.max_uid.saturating_add(1),
        permissions,
    };
    decision.change.new_participants.push(participant.clone());
    participant
}

fn invitee_permissions(mode: VideochatMode) -> Permissions {
    match mode {
        VideochatMode::Videochat => Permissions::promoted_participant(),
        VideochatMode::Conference | VideochatMode::NetworkConference => Permissions::participant(),
    }
}

fn new_videochat(ctx: &Context<'_>, mode: VideochatMode, engine: EngineKind) -> Videochat {
    let id = VideochatId::generate();
    Videochat {
        room: id.to_string(),
        id,
        mode,
        engine,
        shared_secret: shared_secret(),
        created_at_ms: ctx.now_ms,
        ended_at_ms: None,
    }
}

/// A LiveKit E2EE passphrase: 32 random bytes, URL-safe base64 without padding.
fn shared_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn credentials(
    facts: &Facts,
    ctx: &Context<'_>,
    videochat: &Videochat,
    participant: &Participant,
    request_id: Option<&RequestId>,
) -> Result<JoinCredentials, HandshakeError> {
    let user = facts.profile(&participant.user_id);
    let engine = ctx.engines.get(videochat.engine)?;
    let display_name = user.display_name();
    let minted = engine.credentials(&Grant {
        room: &videochat.room,
        identity: participant.user_id.as_str(),
        uid: participant.uid,
        display_name: &display_name,
        can_publish: participant.permissions.can_publish(),
        can_subscribe: true,
        issued_at: u64::try_from(ctx.now_ms / 1000).unwrap_or_default(),
        ttl: ctx.engines.token_ttl(),
    })?;
    Ok(JoinCredentials {
        videochat_request_id: request_id.cloned(),
        videochat_id: videochat.id.clone(),
        mode: videochat.mode,
        engine: videochat.engine.as_str().to_owned(),
        app_id: minted.app_id,
        url: minted.url,
        room: videochat.room.clone(),
        identity: participant.user_id.clone(),
        uid: participant.uid,
        token: minted.token,
        // The E2EE passphrase only means something to LiveKit clients.
        shared_secret: if videochat.engine == EngineKind::Livekit {
            videochat.shared_secret.clone()
        } else {
            String::new()
        },
        user,
        permissions: participant.permissions,
    })
}

/// What a ringing user is shown, from a ring and the facts around it (used when a socket
/// connects and is told what rings).
pub fn ring_shown(
    ring: &VideochatRequest,
    initiator: UserProfile,
    participants: Vec<UserProfile>,
    counter: u32,
) -> Ring {
    Ring {
        request_id: ring.id.clone(),
        user: initiator,
        participants,
        counter,
        expires_at_ms: ring.expires_at_ms,
        videochat_id: ring.videochat_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn engines() -> Engines {
        Engines::from_config(&crate::engine::tests::config()).unwrap()
    }

    fn ctx(engines: &Engines, now_ms: i64) -> Context<'_> {
        Context {
            engines,
            ring_timeout: Duration::from_secs(45),
            limits: Limits::default(),
            now_ms,
        }
    }

    fn facts(users: &[&str]) -> Facts {
        Facts {
            users: users.iter().map(|u| UserProfile::bare(id(u))).collect(),
            target_available: true,
            ..Facts::default()
        }
    }

    fn ring(kind: RequestKind, from: &str, to: &str, expires_at_ms: i64) -> VideochatRequest {
        VideochatRequest {
            id: RequestId::parse("vcr_1").unwrap(),
            kind,
            initiator: id(from),
            target: id(to),
            videochat_id: None,
            engine: EngineKind::Livekit,
            status: RequestStatus::Pending,
            created_at_ms: 0,
            expires_at_ms,
        }
    }

    fn events(decision: &Decision) -> Vec<(String, &'static str)> {
        decision
            .change
            .events
            .iter()
            .map(|o| (o.recipient.to_string(), o.event.name()))
            .collect()
    }

    fn code(result: Result<Decision, HandshakeError>) -> i32 {
        result.map(|_| ()).unwrap_err().code() as i32
    }

    #[test]
    fn a_request_rings_the_target_and_writes_one_ring() {
        let engines = engines();
        let decision = request(
            &facts(&["alice", "bob"]),
            &ctx(&engines, 1_000),
            &id("alice"),
            &id("bob"),
            None,
        )
        .unwrap();
        let Reply::RequestId(ring_id) = &decision.reply else {
            panic!("{:?}", decision.reply)
        };
        let ring = decision.change.new_request.as_ref().unwrap();
        assert_eq!(&ring.id, ring_id);
        assert_eq!(ring.expires_at_ms, 46_000);
        assert!(decision.change.finish.is_none());
        assert_eq!(
            events(&decision),
            vec![("bob".into(), "videochatRequested")]
        );
    }

    #[test]
    fn a_request_is_refused_with_the_contract_codes() {
        let engines = engines();
        let ctx = ctx(&engines, 1_000);
        assert_eq!(
            code(request(
                &facts(&["alice"]),
                &ctx,
                &id("alice"),
                &id("alice"),
                None
            )),
            10016
        );
        assert_eq!(
            code(request(
                &facts(&["alice"]),
                &ctx,
                &id("alice"),
                &id("bob"),
                None
            )),
            1021
        );
        let mut offline = facts(&["alice", "bob"]);
        offline.target_available = false;
        assert_eq!(
            code(request(&offline, &ctx, &id("alice"), &id("bob"), None)),
            10011
        );
    }

    #[test]
    fn a_new_ring_past_the_pending_rings_limit_is_refused_but_asking_again_is_not() {
        let engines = engines();
        let ctx = ctx(&engines, 1_000);
        let mut facts = facts(&["alice", "bob"]);
        facts.pending_outgoing = ctx.limits.max_pending_rings_per_user - 1;
        assert!(request(&facts, &ctx, &id("alice"), &id("bob"), None).is_ok());
        facts.pending_outgoing = ctx.limits.max_pending_rings_per_user;
        assert_eq!(
            code(request(&facts, &ctx, &id("alice"), &id("bob"), None)),
            10017
        );
        // The ring already under way is answered again: no new ring, no limit.
        facts.request = Some(ring(RequestKind::Direct, "alice", "bob", 10_000));
        assert!(request(&facts, &ctx, &id("alice"), &id("bob"), None).is_ok());
        // Glare accepts a ring: not a new one either.
        facts.request = Some(ring(RequestKind::Direct, "bob", "alice", 10_000));
        assert!(request(&facts, &ctx, &id("alice"), &id("bob"), None).is_ok());
    }

    #[test]
    fn invites_past_either_limit_are_refused_with_their_own_codes() {
        let engines = engines();
        let ctx = ctx(&engines, 1_000);
        let mut facts = facts(&["alice", "carol"]);
        facts.videochat = Some(Videochat {
            id: VideochatId::parse("vc_1").unwrap(),
            mode: VideochatMode::Conference,
            engine: EngineKind::Livekit,
            room: "vc_1".into(),
            shared_secret: "s".into(),
            created_at_ms: 0,
            ended_at_ms: None,
        });
        facts.members = vec![Participant {
            videochat_id: VideochatId::parse("vc_1").unwrap(),
            user_id: id("alice"),
            uid: 1,
            permissions: Permissions::owner(),
        }];
        assert!(invite(&facts, &ctx, &id("alice"), &id("carol")).is_ok());
        facts.recent_invites = ctx.limits.max_invites_per_videochat_per_min;
        assert_eq!(
            code(invite(&facts, &ctx, &id("alice"), &id("carol"))),
            10018
        );
        facts.pending_outgoing = ctx.limits.max_pending_rings_per_user;
        assert_eq!(
            code(invite(&facts, &ctx, &id("alice"), &id("carol"))),
            10017
        );
    }

    #[test]
    fn asking_again_answers_the_ring_under_way_and_writes_nothing() {
        let engines = engines();
        let mut facts = facts(&["alice", "bob"]);
        facts.request = Some(ring(RequestKind::Direct, "alice", "bob", 10_000));
        let decision = request(
            &facts,
            &ctx(&engines, 1_000),
            &id("alice"),
            &id("bob"),
            None,
        )
        .unwrap();
        assert_eq!(
            decision.reply,
            Reply::RequestId(RequestId::parse("vcr_1").unwrap())
        );
        assert!(decision.change.is_empty());
    }

    #[test]
    fn glare_accepts_the_ring_coming_the_other_way() {
        let engines = engines();
        let mut facts = facts(&["alice", "bob"]);
        facts.request = Some(ring(RequestKind::Direct, "bob", "alice", 10_000));
        let decision = request(
            &facts,
            &ctx(&engines, 1_000),
            &id("alice"),
            &id("bob"),
            None,
        )
        .unwrap();
        assert_eq!(
            decision.reply,
            Reply::RequestId(RequestId::parse("vcr_1").unwrap())
        );
        let finish = decision.change.finish.as_ref().unwrap();
        assert_eq!(
            (finish.status, finish.ringing_at),
            (RequestStatus::Accepted, Some(1_000))
        );
        assert!(decision.change.new_videochat.is_some());
        let mut got = events(&decision);
        got.sort();
        assert_eq!(
            got,
            vec![
                ("alice".into(), "directVideochatRequestAccepted"),
                ("alice".into(), "videochatAccepted"),
                ("bob".into(), "directVideochatRequestAccepted"),
            ]
        );
    }

    #[test]
    fn a_ring_past_its_timeout_is_expired_before_a_new_one_replaces_it() {
        let engines = engines();
        let mut facts = facts(&["alice", "bob"]);
        facts.request = Some(ring(RequestKind::Direct, "bob", "alice", 900));
        let decision = request(
            &facts,
            &ctx(&engines, 1_000),
            &id("alice"),
            &id("bob"),
            None,
        )
        .unwrap();
        let finish = decision.change.finish.as_ref().unwrap();
        assert_eq!(
            (finish.status, finish.ringing_at),
            (RequestStatus::Expired, None)
        );
        assert!(decision.change.new_request.is_some());
        assert_eq!(
            events(&decision).len(),
            3,
            "timeout to both sides, then the new ring"
        );
    }

    #[test]
    fn only_the_target_accepts_and_a_direct_accept_creates_the_videochat() {
        let engines = engines();
        let mut facts = facts(&["alice", "bob"]);
        facts.request = Some(ring(RequestKind::Direct, "alice", "bob", 10_000));
        let early = ctx(&engines, 1_000);
        assert_eq!(code(accept(&facts, &early, &id("alice"))), 10013);
        assert_eq!(code(accept(&facts, &early, &id("carol"))), 10013);
        let decision = accept(&facts, &early, &id("bob")).unwrap();
        let Reply::Credentials(credentials) = &decision.reply else {
            panic!()
        };
        assert_eq!(credentials.uid, 2);
        assert!(credentials.permissions.is_promoted && !credentials.permissions.is_owner);
        let uids: Vec<_> = decision
            .change
            .new_participants
            .iter()
            .map(|p| (p.user_id.to_string(), p.uid))
            .collect();
        assert_eq!(uids, vec![("alice".into(), 1), ("bob".into(), 2)]);
        assert_eq!(
            events(&decision),
            vec![
                ("alice".into(), "directVideochatRequestAccepted"),
                ("bob".into(), "videochatAccepted")
            ]
        );
        // After its timeout a ring cannot be accepted, even before the sweep marks it.
        let late = ctx(&engines, 10_000);
        assert_eq!(code(accept(&facts, &late, &id("bob"))), 10014);
    }

    #[test]
    fn an_invite_joins_with_the_next_uid_and_rights_by_mode() {
        let engines = engines();
        let videochat = Videochat {
            id: VideochatId::parse("vc_1").unwrap(),
            mode: VideochatMode::Conference,
            engine: EngineKind::Livekit,
            room: "vc_1".into(),
            shared_secret: "s".into(),
            created_at_ms: 0,
            ended_at_ms: None,
        };
        let mut facts = facts(&["alice", "carol"]);
        let mut invite_ring = ring(RequestKind::Invite, "alice", "carol", 10_000);
        invite_ring.videochat_id = Some(videochat.id.clone());
        facts.request = Some(invite_ring);
        facts.videochat = Some(videochat);
        facts.max_uid = 7;
        let decision = accept(&facts, &ctx(&engines, 1_000), &id("carol")).unwrap();
        let joined = &decision.change.new_participants[0];
        assert_eq!(joined.uid, 8);
        assert!(joined.permissions.is_participant && !joined.permissions.is_promoted);
        assert!(decision.change.new_videochat.is_none());
    }

    #[test]
    fn decline_by_the_target_and_cancel_by_the_initiator_reach_both() {
        let engines = engines();
        let mut facts = facts(&["alice", "bob"]);
        facts.request = Some(ring(RequestKind::Direct, "alice", "bob", 10_000));
        let ctx = ctx(&engines, 1_000);
        let declined = decline(&facts, &ctx, &id("bob")).unwrap();
        assert_eq!(
            declined.change.finish.as_ref().unwrap().status,
            RequestStatus::Declined
        );
        let cancelled = decline(&facts, &ctx, &id("alice")).unwrap();
        assert_eq!(
            cancelled.change.finish.as_ref().unwrap().status,
            RequestStatus::Cancelled
        );
        assert_eq!(events(&cancelled).len(), 2);
        assert_eq!(code(decline(&facts, &ctx, &id("carol"))), 10013);
        facts.request.as_mut().unwrap().status = RequestStatus::Accepted;
        assert_eq!(code(decline(&facts, &ctx, &id("bob"))), 10014);
    }

    #[test]
    fn merge_needs_a_direct_ring_and_a_videochat_of_the_caller() {
        let engines = engines();
        let mut facts = facts(&["alice", "bob"]);
        facts.request = Some(ring(RequestKind::Direct, "alice", "bob", 10_000));
        let ctx = ctx(&engines, 1_000);
        assert_eq!(code(merge(&facts, &ctx, &id("bob"))), 10015);
        facts.videochat = Some(Videochat {
            id: VideochatId::parse("vc_1").unwrap(),
            mode: VideochatMode::Videochat,
            engine: EngineKind::Livekit,
            room: "vc_1".into(),
            shared_secret: "s".into(),
            created_at_ms: 0,
            ended_at_ms: None,
        });
        facts.members = vec![Participant {
            videochat_id: VideochatId::parse("vc_1").unwrap(),
            user_id: id("bob"),
            uid: 1,
            permissions: Permissions::owner(),
        }];
        facts.max_uid = 1;
        let merged = merge(&facts, &ctx, &id("bob")).unwrap();
        assert_eq!(
            merged.change.finish.as_ref().unwrap().status,
            RequestStatus::Merged
        );
        assert_eq!(merged.change.new_participants[0].uid, 2);
        assert_eq!(code(merge(&facts, &ctx, &id("alice"))), 10013);
    }

    #[test]
    fn expiry_tells_both_sides_and_requires_only_that_the_ring_is_pending() {
        let engines = engines();
        let ring = ring(RequestKind::Direct, "alice", "bob", 900);
        let decision = expire(&ctx(&engines, 1_000), &ring);
        assert_eq!(decision.change.finish.as_ref().unwrap().ringing_at, None);
        assert_eq!(
            events(&decision),
            vec![
                ("alice".into(), "videochatDeclined"),
                ("bob".into(), "videochatDeclined")
            ]
        );
    }
}
