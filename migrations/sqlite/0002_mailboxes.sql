-- Events get a position per recipient instead of one global sequence (see the Postgres
-- migration of the same name). The outbox is a short-lived delivery record, so it is recreated.

DROP TABLE outbox_events;

CREATE TABLE mailboxes (
    user_id   TEXT PRIMARY KEY,
    last_seq  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE outbox_events (
    recipient_user_id  TEXT NOT NULL,
    seq                INTEGER NOT NULL,
    kind               TEXT NOT NULL,
    payload            BLOB NOT NULL,
    traceparent        TEXT NOT NULL DEFAULT '',
    created_at_ms      INTEGER NOT NULL,
    origin             TEXT NOT NULL,
    PRIMARY KEY (recipient_user_id, seq)
);
CREATE INDEX outbox_events_by_age ON outbox_events (created_at_ms);
