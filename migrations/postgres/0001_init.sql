-- The handshake's state: users, presence, rings, videochats, idempotency and the event outbox.
-- Times are Unix milliseconds (BIGINT) so that the same SQL serves Postgres and SQLite.

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    first_name     TEXT NOT NULL DEFAULT '',
    last_name      TEXT NOT NULL DEFAULT '',
    privacy_mode   BIGINT NOT NULL DEFAULT 0,
    avatar         TEXT NOT NULL DEFAULT '',
    avatar_3d      TEXT NULL,            -- JSON, NULL when empty
    company_name   TEXT NOT NULL DEFAULT '',
    company_title  TEXT NOT NULL DEFAULT '',
    updated_at_ms  BIGINT NOT NULL
);

-- A gateway's presence lease: its sockets count as connected only while the lease is alive.
CREATE TABLE gateways (
    id                   TEXT PRIMARY KEY,
    lease_expires_at_ms  BIGINT NOT NULL
);

CREATE TABLE connections (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    gateway_id       TEXT NOT NULL,
    connected_at_ms  BIGINT NOT NULL
);
CREATE INDEX connections_by_user ON connections (user_id);
CREATE INDEX connections_by_gateway ON connections (gateway_id, user_id);

CREATE TABLE videochats (
    id             TEXT PRIMARY KEY,
    mode           TEXT NOT NULL,
    engine         TEXT NOT NULL,
    room           TEXT NOT NULL,
    shared_secret  TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL
);

CREATE TABLE participants (
    videochat_id  TEXT NOT NULL REFERENCES videochats (id),
    user_id       TEXT NOT NULL,
    uid           BIGINT NOT NULL,
    permissions   BIGINT NOT NULL,
    joined_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (videochat_id, user_id),
    UNIQUE (videochat_id, uid)
);

CREATE TABLE videochat_requests (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('direct', 'invite')),
    initiator_id    TEXT NOT NULL,
    target_id       TEXT NOT NULL,
    videochat_id    TEXT NULL REFERENCES videochats (id),
    engine          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'declined', 'cancelled', 'expired', 'merged')),
    -- The two user ids in sorted order: one pending direct request per pair, either direction.
    pair_key        TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    answered_at_ms  BIGINT NULL
);
CREATE UNIQUE INDEX one_pending_direct_request_per_pair
    ON videochat_requests (pair_key) WHERE status = 'pending' AND kind = 'direct';
CREATE UNIQUE INDEX one_pending_invite_per_target
    ON videochat_requests (videochat_id, target_id) WHERE status = 'pending' AND kind = 'invite';
CREATE INDEX pending_requests_by_target ON videochat_requests (target_id) WHERE status = 'pending';
CREATE INDEX pending_requests_by_expiry ON videochat_requests (expires_at_ms) WHERE status = 'pending';

-- The first answer to each (user, event.id), replayed on retries for 24 hours.
CREATE TABLE idempotency_records (
    user_id        TEXT NOT NULL,
    key            TEXT NOT NULL,
    operation      TEXT NOT NULL,
    reply          BYTEA NULL,
    error_code     BIGINT NULL,
    error_message  TEXT NULL,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_records_by_age ON idempotency_records (created_at_ms);

-- Events written in the transaction of the change that caused them; gateways read them in seq order.
CREATE TABLE outbox_events (
    seq                BIGSERIAL PRIMARY KEY,
    event_id           TEXT NOT NULL,
    recipient_user_id  TEXT NOT NULL,
    payload            BYTEA NOT NULL,
    traceparent        TEXT NOT NULL DEFAULT '',
    created_at_ms      BIGINT NOT NULL
);
CREATE INDEX outbox_events_by_age ON outbox_events (created_at_ms);
