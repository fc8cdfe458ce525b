-- Events get a position per recipient instead of one global sequence.
--
-- Before: every event took a global advisory lock so that commit order equalled sequence order,
-- which serialized all writers of the whole instance. Now each recipient has a mailbox whose
-- `last_seq` a transaction bumps (a row lock held until commit), so positions of one user's
-- events commit in order while writers for different users never wait on each other.
-- The outbox is a short-lived delivery record (pruned after its retention), so it is recreated.

DROP TABLE outbox_events;

CREATE TABLE mailboxes (
    user_id        TEXT PRIMARY KEY,
    -- Position of the newest event addressed to the user (1, 2, 3 …; never reused).
    last_seq       BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE outbox_events (
    recipient_user_id  TEXT NOT NULL,
    seq                BIGINT NOT NULL,
    -- The event's name, for people reading the table; the payload is what is delivered.
    kind               TEXT NOT NULL,
    -- Protobuf `videochat.handshake.v1.Event` (its `kind` only; position and recipient are columns).
    payload            BYTEA NOT NULL,
    traceparent        TEXT NOT NULL DEFAULT '',
    created_at_ms      BIGINT NOT NULL,
    -- The replica that committed it (and pushed it to its gateways at once).
    origin             TEXT NOT NULL,
    -- The writing transaction's id: other replicas follow the outbox in transaction order, up to
    -- the oldest transaction still running, so none is skipped because it committed late.
    xid                BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    PRIMARY KEY (recipient_user_id, seq)
);
CREATE INDEX outbox_events_by_xid ON outbox_events (xid);
-- Rows arrive in time order: a BRIN index costs almost nothing per insert and serves pruning.
CREATE INDEX outbox_events_by_age ON outbox_events USING BRIN (created_at_ms);
