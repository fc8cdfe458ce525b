-- A `push.cancel` names the devices its `push.ring` woke, and a webhook's delivery spans join the
-- trace of the request that caused it (docs/webhooks.md).

-- The devices a ring was handed to push for, as the `push.ring` listed them (a JSON array of
-- `{platform, token, voip}`); NULL: the ring was not pushed. Bytes, not text, because the load
-- queries carry it in their one blob column. Its end sends them again in the `push.cancel`, so
-- a push sender needs to remember nothing between the two.
ALTER TABLE videochat_requests ADD COLUMN push_devices BYTEA NULL;
-- Rings pushed before this migration still get their `push.cancel` (naming no devices).
UPDATE videochat_requests SET push_devices = convert_to('[]', 'UTF8')
    WHERE push_handoff_at_ms IS NOT NULL AND status = 'pending';

-- The W3C traceparent of the request whose change wrote the delivery: each attempt's
-- `webhook.deliver` span is a child of it. Empty for rows written before this migration.
ALTER TABLE webhook_deliveries ADD COLUMN traceparent TEXT NOT NULL DEFAULT '';
