-- SQLite twin of migrations/postgres/0008_push_cancel_devices_and_webhook_traces.sql.
-- A `push.cancel` names the devices its `push.ring` woke, and a webhook's delivery spans join the
-- trace of the request that caused it (docs/webhooks.md).

-- The devices a ring was handed to push for, as the `push.ring` listed them (a JSON array of
-- `{platform, token, voip}`); NULL: the ring was not pushed.
ALTER TABLE videochat_requests ADD COLUMN push_devices BLOB NULL;
-- Rings pushed before this migration still get their `push.cancel` (naming no devices).
UPDATE videochat_requests SET push_devices = CAST('[]' AS BLOB)
    WHERE push_handoff_at_ms IS NOT NULL AND status = 'pending';

-- The W3C traceparent of the request whose change wrote the delivery.
ALTER TABLE webhook_deliveries ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';
