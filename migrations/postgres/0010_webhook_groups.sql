-- A write batch's webhook deliveries in one row (docs/webhooks.md, "How a delivery is kept").
--
-- A row per delivery cost each handshake an insert into `webhook_deliveries` and its two indexes,
-- a delete once delivered, and their vacuuming (docs/benchmarks.md, "Webhooks as one row per
-- write batch": WAL per handshake -15 %). The
-- deliveries one batch commits are written instead as one row here, already claimed by the
-- replica that wrote them, which sends them at once. The row goes when every one of them has had
-- its first attempt; those not delivered become rows of `webhook_deliveries` then, in the same
-- transaction. A group whose lease runs out (its replica died) is released the same way, every
-- delivery due at once, by whichever replica's dispatcher finds it first.
CREATE TABLE webhook_groups (
    -- `grp_…`, made by the replica that writes it.
    id                TEXT PRIMARY KEY,
    -- Claimed by the writing replica until then.
    leased_until_ms   BIGINT NOT NULL,
    -- One element per delivery, in the same order in every array: the columns of
    -- `webhook_deliveries` a delivery is written with.
    ids               TEXT[] NOT NULL,
    endpoints         TEXT[] NOT NULL,
    event_types       TEXT[] NOT NULL,
    payloads          TEXT[] NOT NULL,
    traceparents      TEXT[] NOT NULL,
    created_at_ms     BIGINT[] NOT NULL
);
CREATE INDEX webhook_groups_lapsing ON webhook_groups (leased_until_ms);

-- The bodies (~0.7 KB each, dozens a row) are compressed and kept in the row, not in TOAST
-- chunks: measured inserting rows of 36 call-status bodies, 174 µs a row with the default
-- (pglz, out of line), 62 µs with lz4 kept in line. A server built without lz4 keeps pglz.
ALTER TABLE webhook_groups SET (toast_tuple_target = 8160);
ALTER TABLE webhook_groups ALTER COLUMN payloads SET STORAGE MAIN;
DO $$
BEGIN
    ALTER TABLE webhook_groups ALTER COLUMN payloads SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4: webhook bodies are compressed with pglz';
END
$$;
