-- The outbox is pruned in transaction order (`outbox_events_by_xid`, which followers read by
-- anyway), not through a BRIN index on time: BRIN returns every page range vacuum has not
-- summarized yet, so pruning through it read the whole recent outbox at every sweep.
DROP INDEX IF EXISTS outbox_events_by_age;
