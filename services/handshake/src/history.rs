//! Call history: every ring, as each of its two users remembers it.
//!
//! History is not a second record of what happened: it is the rings themselves
//! (`videochat_requests`, which keep their final status, when they were answered and, for a
//! direct ring, the videochat it led to), read from one user's side, plus what the media engine
//! reported about that user's time in the room (`participants`). So writing a handshake costs
//! nothing more, and history can never disagree with the events the users were sent.
//! Rings older than the retention (`VIDEOCHAT_HISTORY_RETENTION_S`) are deleted.

use crate::domain::{RequestId, RequestKind, RequestStatus, UserProfile, VideochatId};

/// Most entries one page holds.
pub const MAX_PAGE: u32 = 100;
/// Entries in a page when the client does not say.
pub const DEFAULT_PAGE: u32 = 20;
/// Most missed calls a socket that connects is shown (their count is exact).
pub const MISSED_SHOWN: i64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The user rang.
    Outgoing,
    /// The user was rung.
    Incoming,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outgoing => "outgoing",
            Direction::Incoming => "incoming",
        }
    }
}

/// How a ring ended, in the words of history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Declined,
    Cancelled,
    /// Nobody answered before the ring timed out.
    Missed,
    Merged,
}

impl Outcome {
    /// The outcome of a ring that ended with `status`; `None` while it still rings.
    pub fn of(status: RequestStatus) -> Option<Self> {
        Some(match status {
            RequestStatus::Pending => return None,
            RequestStatus::Accepted => Outcome::Accepted,
            RequestStatus::Declined => Outcome::Declined,
            RequestStatus::Cancelled => Outcome::Cancelled,
            RequestStatus::Expired => Outcome::Missed,
            RequestStatus::Merged => Outcome::Merged,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Declined => "declined",
            Outcome::Cancelled => "cancelled",
            Outcome::Missed => "missed",
            Outcome::Merged => "merged",
        }
    }

    /// The `reason` both users were told in `videochatDeclined`, for the rings that ended so.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Outcome::Declined => Some("declined"),
            Outcome::Cancelled => Some("cancelled"),
            Outcome::Missed => Some("timeout"),
            Outcome::Accepted | Outcome::Merged => None,
        }
    }

    /// Whether the callee answered (accepted, declined or merged the ring).
    pub fn answered(self) -> bool {
        matches!(
            self,
            Outcome::Accepted | Outcome::Declined | Outcome::Merged
        )
    }

    /// Whether the ring led into a videochat (whose end and room time history then shows).
    pub fn joined(self) -> bool {
        matches!(self, Outcome::Accepted | Outcome::Merged)
    }
}

/// One ring from one user's side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallEntry {
    pub request_id: RequestId,
    pub direction: Direction,
    /// The other side.
    pub other: UserProfile,
    pub kind: RequestKind,
    pub outcome: Outcome,
    /// The videochat the ring was for (invite) or led to (accepted, merged).
    pub videochat_id: Option<VideochatId>,
    pub requested_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    /// When the ring ended unanswered, or when the videochat ended for this user (they left
    /// the room or the room finished), as the engine reported it.
    pub ended_at_ms: Option<i64>,
    /// How long the user was in the videochat's room, as the engine reported it.
    pub in_room_ms: Option<i64>,
}

/// What the store read for one entry, before it is shaped for the user.
#[derive(Clone, Debug)]
pub struct StoredCall {
    pub request_id: RequestId,
    pub kind: RequestKind,
    pub status: RequestStatus,
    /// True when the user was the one who rang.
    pub outgoing: bool,
    pub other: UserProfile,
    pub videochat_id: Option<VideochatId>,
    pub created_at_ms: i64,
    /// When the ring left `pending` (answered, cancelled or timed out).
    pub finished_at_ms: Option<i64>,
    /// The user's participant row in that videochat, if they were in it.
    pub room: Option<RoomTime>,
    pub videochat_ended_at_ms: Option<i64>,
}

/// A participant's time in a room, as the engine reported it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoomTime {
    /// Summed over the stays that ended.
    pub past_ms: i64,
    /// When the stay under way began, if the user is in the room now.
    pub since_ms: Option<i64>,
    /// When the user left (the room or the videochat), if they did.
    pub left_at_ms: Option<i64>,
    /// Whether the engine reported anything about this participant.
    pub reported: bool,
}

impl StoredCall {
    /// The entry the user sees, at `now_ms`; `None` for a ring still ringing.
    pub fn entry(self, now_ms: i64) -> Option<CallEntry> {
        let outcome = Outcome::of(self.status)?;
        let (ended_at_ms, in_room_ms) = if outcome.joined() {
            let room = self.room.unwrap_or_default();
            let ended = room.left_at_ms.or(self.videochat_ended_at_ms);
            let in_room = room
                .reported
                .then(|| room.past_ms + room.since_ms.map_or(0, |since| (now_ms - since).max(0)));
            (ended, in_room)
        } else {
            (self.finished_at_ms, None)
        };
        Some(CallEntry {
            request_id: self.request_id,
            direction: if self.outgoing {
                Direction::Outgoing
            } else {
                Direction::Incoming
            },
            other: self.other,
            kind: self.kind,
            outcome,
            videochat_id: self.videochat_id,
            requested_at_ms: self.created_at_ms,
            answered_at_ms: if outcome.answered() {
                self.finished_at_ms
            } else {
                None
            },
            ended_at_ms,
            in_room_ms,
        })
    }
}

/// One page of a user's history, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallPage {
    pub calls: Vec<CallEntry>,
    /// Pass as `before` for the next page; `None` on the last one.
    pub next: Option<i64>,
    /// Calls the user missed since they last listed.
    pub missed_count: u32,
}

/// Cuts `calls` (newest first, up to `limit + 1` read) into a page of at most `limit` and the
/// `before` of the next page.
///
/// `before` is a time, so a page never ends inside a run of entries requested in the same
/// millisecond: the run moves whole to the next page (unless it fills the page by itself, when
/// it is cut; more than `limit` rings of one user in one millisecond cannot be paged).
pub fn paginate(mut calls: Vec<CallEntry>, limit: usize) -> (Vec<CallEntry>, Option<i64>) {
    if calls.len() <= limit {
        return (calls, None);
    }
    calls.truncate(limit + 1);
    let boundary = calls[limit].requested_at_ms;
    calls.truncate(limit);
    let keep = calls
        .iter()
        .rposition(|c| c.requested_at_ms != boundary)
        .map_or(limit, |last_other| last_other + 1);
    calls.truncate(keep);
    let next = calls.last().map(|c| c.requested_at_ms);
    (calls, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn at(ms: i64) -> CallEntry {
        CallEntry {
            request_id: RequestId::generate(),
            direction: Direction::Incoming,
            other: UserProfile::bare(UserId::parse("bob").unwrap()),
            kind: RequestKind::Direct,
            outcome: Outcome::Missed,
            videochat_id: None,
            requested_at_ms: ms,
            answered_at_ms: None,
            ended_at_ms: None,
            in_room_ms: None,
        }
    }

    fn times(calls: &[CallEntry]) -> Vec<i64> {
        calls.iter().map(|c| c.requested_at_ms).collect()
    }

    #[test]
    fn a_short_read_is_the_last_page() {
        let (page, next) = paginate(vec![at(5), at(4)], 2);
        assert_eq!(times(&page), [5, 4]);
        assert_eq!(next, None);
    }

    #[test]
    fn a_full_page_points_below_its_oldest_entry() {
        let (page, next) = paginate(vec![at(5), at(4), at(3)], 2);
        assert_eq!(times(&page), [5, 4]);
        assert_eq!(next, Some(4));
    }

    #[test]
    fn entries_of_one_millisecond_are_never_split_across_pages() {
        let (page, next) = paginate(vec![at(5), at(4), at(4)], 2);
        assert_eq!(times(&page), [5]);
        assert_eq!(next, Some(5), "both 4s come on the next page");
    }

    #[test]
    fn a_page_of_one_millisecond_is_cut_rather_than_looping() {
        let (page, next) = paginate(vec![at(4), at(4), at(4)], 2);
        assert_eq!(times(&page), [4, 4]);
        assert_eq!(next, Some(4));
    }

    #[test]
    fn outcomes_say_what_both_users_were_told() {
        assert_eq!(Outcome::of(RequestStatus::Expired), Some(Outcome::Missed));
        assert_eq!(Outcome::Missed.reason(), Some("timeout"));
        assert_eq!(Outcome::of(RequestStatus::Pending), None);
        assert!(Outcome::Merged.joined() && Outcome::Merged.answered());
        assert!(!Outcome::Cancelled.answered());
    }

    #[test]
    fn room_time_counts_the_stay_under_way() {
        let stored = StoredCall {
            request_id: RequestId::generate(),
            kind: RequestKind::Direct,
            status: RequestStatus::Accepted,
            outgoing: true,
            other: UserProfile::bare(UserId::parse("bob").unwrap()),
            videochat_id: None,
            created_at_ms: 0,
            finished_at_ms: Some(10),
            room: Some(RoomTime {
                past_ms: 1_000,
                since_ms: Some(5_000),
                left_at_ms: None,
                reported: true,
            }),
            videochat_ended_at_ms: None,
        };
        let entry = stored.entry(7_000).unwrap();
        assert_eq!(entry.in_room_ms, Some(3_000));
        assert_eq!(entry.answered_at_ms, Some(10));
        assert_eq!(entry.ended_at_ms, None);
    }
}
