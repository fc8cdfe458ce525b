-- Webhooks out (docs/webhooks.md): call-status events and the push hand-off.

-- The webhook outbox. Rows are written by the same transaction as the change they describe, so
-- a webhook is never sent for a change that rolled back, nor lost for one that committed. The
-- primary key is the Standard Webhooks `webhook-id` (`msg_…`), the same on every retry.
CREATE TABLE webhook_deliveries (
    id                  TEXT PRIMARY KEY,
    endpoint            TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    -- The signed body, as sent (JSON).
    payload             TEXT NOT NULL,
    created_at_ms       BIGINT NOT NULL,
    -- When the next attempt is due. A dispatcher that claims a row moves this forward by a
    -- lease, so no other replica sends it meanwhile; a replica that dies mid-send leaves the row
    -- to be sent again when the lease runs out.
    next_attempt_at_ms  BIGINT NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 0,
    -- Only deliveries still owed or given up on are kept: a delivered row is deleted at once
    -- (cheaper than updating it, and nothing reads it again).
    status              TEXT NOT NULL CHECK (status IN ('pending', 'failed')),
    last_error          TEXT NULL,
    failed_at_ms        BIGINT NULL,
    -- Set when an operator retried a failed delivery: its age counts from then.
    retried_at_ms       BIGINT NULL
);
-- Partial indexes: each holds only the rows its readers look for (the claim: pending rows by due
-- time; the admin listing and pruning: failed ones by age).
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at_ms) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (created_at_ms, id) WHERE status = 'failed';

-- Devices registered for push (videochat:registerPushDevice, UserDirectory/RegisterPushDevice).
CREATE TABLE push_devices (
    user_id        TEXT NOT NULL,
    platform       TEXT NOT NULL CHECK (platform IN ('apns', 'fcm', 'webpush')),
    token          TEXT NOT NULL,
    voip           BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (user_id, token)
);

-- When a ring to a user with no live socket was handed to the push sender (a `push.ring`
-- webhook): its end then sends a `push.cancel`.
ALTER TABLE videochat_requests ADD COLUMN push_handoff_at_ms BIGINT NULL;
