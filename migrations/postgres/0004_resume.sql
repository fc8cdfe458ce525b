-- Resumable delivery (docs/architecture.md, "Nothing lost"): how far each user's events were
-- seen, so that a user's next socket gets what was due while it had none.
--
-- Separate from `mailboxes` on purpose: a mailbox row is locked by every write that gives the
-- user an event, and gateway reports of seen positions must not queue behind those writes (or
-- deadlock with a batch of them).
CREATE TABLE mailbox_seen (
    user_id   TEXT PRIMARY KEY,
    seen_seq  BIGINT NOT NULL
);

-- The resync snapshot: the videochats a user is in (a user's own pending rings use
-- pending_requests_by_initiator, from 0003).
CREATE INDEX participants_by_user ON participants (user_id);
