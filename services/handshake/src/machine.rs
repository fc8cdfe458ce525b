//! The handshake state machine: CONTRACT §4 as code.
//!
//! Each operation takes one store transaction and returns what it answers plus the events it
//! emits; the caller appends those events to the outbox in the same transaction and commits, so
//! a change and its events land together or not at all. Nothing here does I/O except through
//! the transaction, and every rule of the contract has one obvious place:
//!
//! * [`request`]: ring a user (or return the ring already under way; or, on glare, accept the
//!   ring coming the other way).
//! * [`invite`]: ring a user into a videochat the caller is in.
//! * [`accept`]: only the target, only once; creates the videochat or joins the existing one.
//! * [`decline`]: the target declines, the initiator cancels.
//! * [`merge`]: pull the initiator of a ringing direct request into the caller's videochat.
//! * [`expire`]: a ring that nobody answered in time.

use std::time::Duration;

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::domain::{
    DeclineReason, Event, JoinCredentials, Outgoing, Participant, Permissions, RequestId,
    RequestKind, RequestStatus, Ring, UserId, UserProfile, Videochat, VideochatId, VideochatMode,
    VideochatRequest,
};
use crate::engine::{EngineKind, Engines, Grant};
use crate::error::HandshakeError;
use crate::store::StoreTx;

/// How many participants a ring shows (the API text's "max 10").
pub const MAX_RING_PARTICIPANTS: i64 = 10;

/// What the state machine needs besides the store: the engines, the ring timeout, the clock.
pub struct Context<'a> {
    pub engines: &'a Engines,
    pub ring_timeout: Duration,
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

/// An answer plus the events to commit with it.
#[derive(Debug)]
pub struct Outcome {
    pub reply: Reply,
    pub events: Vec<Outgoing>,
    /// How the ring ended, when this operation ended one (for metrics).
    pub ended: Option<(RequestStatus, i64)>,
}

impl Outcome {
    fn new(reply: Reply) -> Self {
        Self {
            reply,
            events: Vec::new(),
            ended: None,
        }
    }

    fn emit(&mut self, recipient: &UserId, event: Event) {
        self.events.push(Outgoing {
            recipient: recipient.clone(),
            event,
        });
    }
}

/// Runs one command for `actor`.
pub async fn apply(
    tx: &mut dyn StoreTx,
    ctx: &Context<'_>,
    actor: &UserId,
    command: &Command,
) -> Result<Outcome, HandshakeError> {
    match command {
        Command::RequestDirect { target, engine } => request(tx, ctx, actor, target, *engine).await,
        Command::Invite { target, videochat } => invite(tx, ctx, actor, target, videochat).await,
        Command::Accept { request } => accept(tx, ctx, actor, request).await,
        Command::Decline { request } => decline(tx, ctx, actor, request).await,
        Command::Merge { videochat, request } => merge(tx, ctx, actor, videochat, request).await,
    }
}

/// Ring `target` for a direct videochat.
///
/// One pending direct request per pair: asking again returns the ring under way; if the target
/// already rings the caller (glare), the caller's request accepts that ring instead.
pub async fn request(
    tx: &mut dyn StoreTx,
    ctx: &Context<'_>,
    actor: &UserId,
    target: &UserId,
    engine: Option<EngineKind>,
) -> Result<Outcome, HandshakeError> {
    if actor == target {
        return Err(HandshakeError::InvalidTarget("cannot call yourself"));
    }
    if tx.user(target).await?.is_none() {
        return Err(HandshakeError::TargetUserNotFound);
    }
    let mut expired_first = None;
    if let Some(existing) = tx.pending_direct_between(actor, target).await? {
        if !existing.is_ringing(ctx.now_ms) {
            // Timed out but not yet swept: expire it here so the new ring can take its place.
            expired_first = Some(expire(tx, ctx, &existing).await?);
        } else if &existing.initiator == actor {
            return Ok(Outcome::new(Reply::RequestId(existing.id)));
        } else {
            // Glare: both want the call. Accepting the ring already under way gives one
            // videochat; each side gets its own credentials as an event.
            let ring_id = existing.id.clone();
            let mut outcome = accept_ringing(tx, ctx, actor, existing).await?;
            let reply = std::mem::replace(&mut outcome.reply, Reply::RequestId(ring_id));
            if let Reply::Credentials(credentials) = reply {
                outcome.emit(actor, Event::DirectVideochatRequestAccepted(credentials));
            }
            return Ok(outcome);
        }
    }
    if !tx.is_available(target, ctx.now_ms).await? {
        return Err(HandshakeError::TargetUserNotAvailable);
    }
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
    tx.insert_request(&ring).await?;
    let mut outcome = expired_first.unwrap_or_else(|| Outcome::new(Reply::Done));
    outcome.reply = Reply::RequestId(ring.id.clone());
    let event = Event::VideochatRequested(Box::new(ring_shown_to_target(tx, &ring).await?));
    outcome.emit(target, event);
    Ok(outcome)
}

/// Ring `target` into `videochat`, of which the caller must be a participant.
pub async fn invite(
    tx: &mut dyn StoreTx,
    ctx: &Context<'_>,
    actor: &UserId,
    target: &UserId,
    videochat_id: &VideochatId,
) -> Result<Outcome, HandshakeError> {
    let videochat = videochat_of_participant(tx, videochat_id, actor).await?;
    if actor == target {
        return Err(HandshakeError::InvalidTarget("cannot invite yourself"));
    }
    if tx.user(target).await?.is_none() {
        return Err(HandshakeError::TargetUserNotFound);
    }
    if tx.participant(&videochat.id, target).await?.is_some() {
        return Err(HandshakeError::InvalidTarget(
            "the user is already in the videochat",
        ));
    }
    let mut expired_first = None;
    if let Some(existing) = tx.pending_invite(&videochat.id, target).await? {
        if existing.is_ringing(ctx.now_ms) {
            return Ok(Outcome::new(Reply::RequestId(existing.id)));
        }
        expired_first = Some(expire(tx, ctx, &existing).await?);
    }
    if !tx.is_available(target, ctx.now_ms).await? {
        return Err(HandshakeError::TargetUserNotAvailable);
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
    tx.insert_request(&ring).await?;
    let mut outcome = expired_first.unwrap_or_else(|| Outcome::new(Reply::Done));
    outcome.reply = Reply::RequestId(ring.id.clone());
    let event = Event::VideochatRequested(Box::new(ring_shown_to_target(tx, &ring).await?));
    outcome.emit(target, event);
    Ok(outcome)
}

/// Answer a ring with yes. Only its target may, and only while it rings.
pub async fn accept(
    tx: &mut dyn StoreTx,
    ctx: &Context<'_>,
    actor: &UserId,
    request_id: &RequestId,
) -> Result<Outcome, HandshakeError> {
    let ring = tx
        .request(request_id)
        .await?
        .ok_or(HandshakeError::RequestNotFound)?;
    if &ring.target != actor {
        return Err(HandshakeError::NotAllowed(
            "only the user being called may accept",
        ));
    }
    ensure_ringing(&ring, ctx)?;
    accept_ringing(tx, ctx, actor, ring).await
}

/// Accepts a ring already known to be pending for `actor` (from [`accept`] or glare).
async fn accept_ringing(
    tx: &mut dyn StoreTx,
    ctx: &Context<'_>,
    actor: &UserId,
    ring: VideochatRequest,
) -> Result<Outcome, HandshakeError> {
    if !tx
        .finish_request(&ring.id, RequestStatus::Accepted, ctx.now_ms)
        .await?
    {
        return Err(already_answered(tx, &ring.id).await?);
    }
    let mut outcome = Outcome::new(Reply::Done);
    outcome.ended = Some((RequestStatus::Accepted, ctx.now_ms - ring.created_at_ms));
    match ring.kind {
        RequestKind::Direct => {
            let videochat = new_videochat(ctx, VideochatMode::Videochat, ring.engine);
            tx.insert_videochat(&videochat).await?;
            let owner = tx
                .add_participant(
                    &videochat.id,
                    &ring.initiator,
                    Permissions::owner(),
                    ctx.now_ms,
                )
                .await?;
            let guest = tx
                .add_participant(
                    &videochat.id,
                    actor,
                    Permissions::promoted_participant(),
                    ctx.now_ms,
                )
                .await?;
            let for_initiator = credentials(tx, ctx, &videochat, &owner, Some(&ring.id)).await?;
            let for_acceptor = credentials(tx, ctx, &videochat, &guest, Some(&ring.id)).await?;
            outcome.emit(
                &ring.initiator,
                Event::DirectVideochatRequestAccepted(Box::new(for_initiator)),
            );
            outcome.reply = Reply::Credentials(Box::new(for_acceptor));
        }
        RequestKind::Invite => {
            let videochat_id = ring
                .videochat_id
                .as_ref()
                .ok_or(HandshakeError::VideochatNotFound)?;
            let videochat = tx
                .videochat(videochat_id)
                .await?
                .ok_or(HandshakeError::VideochatNotFound)?;
            let participant = join(
                tx,
                ctx,
                &videochat,
                actor,
                invitee_permissions(videochat.mode),
            )
            .await?;
            let for_acceptor =
                credentials(tx, ctx, &videochat, &participant, Some(&ring.id)).await?;
            outcome.reply = Reply::Credentials(Box::new(for_acceptor));
        }
    }
    outcome.emit(
        actor,
        Event::VideochatAccepted {
            request_id: ring.id.clone(),
        },
    );
    Ok(outcome)
}

/// Answer a ring with no: the target declines, the initiator cancels. Both sides hear of it.
pub async fn decline(
    tx: &mut dyn StoreTx,
    ctx: &Context<'_>,
    actor: &UserId,
    request_id: &RequestId,
) -> Result<Outcome, HandshakeError> {
    let ring = tx
        .request(request_id)
        .await?
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
    ensure_ringing(&ring, ctx)?;
    if !tx.finish_request(&ring.id, status, ctx.now_ms).await? {
        return Err(already_answered(tx, &ring.id).await?);
    }
    let mut outcome = Outcome::new(Reply::Done);
    outcome.ended = Some((status, ctx.now_ms - ring.created_at_ms));
    notify_both(&mut outcome, &ring, reason);
    Ok(outcome)
}

/// The caller, in `videochat` and rung by a direct request, pulls its initiator into the
/// videochat instead of starting a new one.
pub async fn merge(
    tx: &mut dyn StoreTx,
    ctx: &Context<'_>,
    actor: &UserId,
    videochat_id: &VideochatId,
    request_id: &RequestId,
) -> Result<Outcome, HandshakeError> {
    let ring = tx
        .request(request_id)
        .await?
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
    ensure_ringing(&ring, ctx)?;
    let videochat = videochat_of_participant(tx, videochat_id, actor).await?;
    if !tx
        .finish_request(&ring.id, RequestStatus::Merged, ctx.now_ms)
        .await?
    {
        return Err(already_answered(tx, &ring.id).await?);
    }
    let participant = join(
        tx,
        ctx,
        &videochat,
        &ring.initiator,
        Permissions::promoted_participant(),
    )
    .await?;
    let for_initiator = credentials(tx, ctx, &videochat, &participant, Some(&ring.id)).await?;
    let mut outcome = Outcome::new(Reply::Done);
    outcome.ended = Some((RequestStatus::Merged, ctx.now_ms - ring.created_at_ms));
    outcome.emit(
        &ring.initiator,
        Event::DirectVideochatRequestAccepted(Box::new(for_initiator)),
    );
    outcome.emit(
        actor,
        Event::VideochatAccepted {
            request_id: ring.id.clone(),
        },
    );
    Ok(outcome)
}

/// A ring nobody answered in time: both sides hear `reason: "timeout"`.
/// Returns an empty outcome if someone answered it meanwhile.
pub async fn expire(
    tx: &mut dyn StoreTx,
    ctx: &Context<'_>,
    ring: &VideochatRequest,
) -> Result<Outcome, HandshakeError> {
    let mut outcome = Outcome::new(Reply::Done);
    if tx
        .finish_request(&ring.id, RequestStatus::Expired, ctx.now_ms)
        .await?
    {
        outcome.ended = Some((RequestStatus::Expired, ctx.now_ms - ring.created_at_ms));
        notify_both(&mut outcome, ring, DeclineReason::Timeout);
    }
    Ok(outcome)
}

/// The rings a user's new socket should show at once.
pub async fn ringing_for(
    tx: &mut dyn StoreTx,
    user: &UserId,
    now_ms: i64,
) -> Result<Vec<Ring>, HandshakeError> {
    let mut rings = Vec::new();
    for ring in tx.ringing_for(user, now_ms).await? {
        rings.push(ring_shown_to_target(tx, &ring).await?);
    }
    Ok(rings)
}

fn ensure_ringing(ring: &VideochatRequest, ctx: &Context<'_>) -> Result<(), HandshakeError> {
    match ring.status {
        RequestStatus::Pending if ring.is_ringing(ctx.now_ms) => Ok(()),
        // Past its timeout; the expiry sweep is about to tell both sides.
        RequestStatus::Pending => Err(HandshakeError::RequestNotPending(RequestStatus::Expired)),
        other => Err(HandshakeError::RequestNotPending(other)),
    }
}

/// Someone else answered between our read and our write.
async fn already_answered(
    tx: &mut dyn StoreTx,
    id: &RequestId,
) -> Result<HandshakeError, HandshakeError> {
    let status = tx
        .request(id)
        .await?
        .map(|r| r.status)
        .unwrap_or(RequestStatus::Expired);
    Ok(HandshakeError::RequestNotPending(status))
}

fn notify_both(outcome: &mut Outcome, ring: &VideochatRequest, reason: DeclineReason) {
    for user in [&ring.initiator, &ring.target] {
        outcome.emit(
            user,
            Event::VideochatDeclined {
                request_id: ring.id.clone(),
                reason,
            },
        );
    }
}

/// The videochat, if `user` takes part in it; 10015 otherwise (not found and not yours look
/// alike, so ids of other people's videochats cannot be probed).
async fn videochat_of_participant(
    tx: &mut dyn StoreTx,
    id: &VideochatId,
    user: &UserId,
) -> Result<Videochat, HandshakeError> {
    let videochat = tx
        .videochat(id)
        .await?
        .ok_or(HandshakeError::VideochatNotFound)?;
    if tx.participant(id, user).await?.is_none() {
        return Err(HandshakeError::VideochatNotFound);
    }
    Ok(videochat)
}

/// Adds `user` to the videochat unless already there (then keeps the rights they have).
async fn join(
    tx: &mut dyn StoreTx,
    ctx: &Context<'_>,
    videochat: &Videochat,
    user: &UserId,
    permissions: Permissions,
) -> Result<Participant, HandshakeError> {
    if let Some(existing) = tx.participant(&videochat.id, user).await? {
        return Ok(existing);
    }
    Ok(tx
        .add_participant(&videochat.id, user, permissions, ctx.now_ms)
        .await?)
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
    }
}

/// A LiveKit E2EE passphrase: 32 random bytes, URL-safe base64 without padding.
fn shared_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Creates a videochat owned by `owner` (for internal services that start conferences).
pub async fn create_videochat(
    tx: &mut dyn StoreTx,
    ctx: &Context<'_>,
    owner: &UserId,
    mode: VideochatMode,
    engine: Option<EngineKind>,
) -> Result<JoinCredentials, HandshakeError> {
    let engine = match engine {
        Some(kind) => {
            ctx.engines.get(kind)?;
            kind
        }
        None => ctx.engines.default_kind(),
    };
    if tx.user(owner).await?.is_none() {
        return Err(HandshakeError::TargetUserNotFound);
    }
    let videochat = new_videochat(ctx, mode, engine);
    tx.insert_videochat(&videochat).await?;
    let participant = tx
        .add_participant(&videochat.id, owner, Permissions::owner(), ctx.now_ms)
        .await?;
    credentials(tx, ctx, &videochat, &participant, None).await
}

async fn ring_shown_to_target(
    tx: &mut dyn StoreTx,
    ring: &VideochatRequest,
) -> Result<Ring, HandshakeError> {
    let user = tx
        .user(&ring.initiator)
        .await?
        .unwrap_or_else(|| UserProfile::bare(ring.initiator.clone()));
    let (participants, counter) = match &ring.videochat_id {
        Some(videochat) => (
            tx.participant_profiles(videochat, MAX_RING_PARTICIPANTS)
                .await?,
            tx.participant_count(videochat).await?,
        ),
        None => (Vec::new(), 0),
    };
    Ok(Ring {
        request_id: ring.id.clone(),
        user,
        participants,
        counter,
        expires_at_ms: ring.expires_at_ms,
        videochat_id: ring.videochat_id.clone(),
    })
}

async fn credentials(
    tx: &mut dyn StoreTx,
    ctx: &Context<'_>,
    videochat: &Videochat,
    participant: &Participant,
    request_id: Option<&RequestId>,
) -> Result<JoinCredentials, HandshakeError> {
    let user = tx
        .user(&participant.user_id)
        .await?
        .unwrap_or_else(|| UserProfile::bare(participant.user_id.clone()));
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
