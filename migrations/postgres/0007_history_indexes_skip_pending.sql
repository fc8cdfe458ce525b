-- The history indexes of 0005 hold only rings that ended.
--
-- Written over every ring, they were the planner's choice for "this user's rings still ringing"
-- (the pending-rings limit, the rings replayed on connect): equality on the user's column, the
-- same as the small partial indexes of 0001 and 0003 offer, so those reads walked the user's
-- whole history, a cost that grew with every call they ever made. Restricted to finished rings,
-- they no longer answer a `status = 'pending'` read, and a new ring no longer writes them.
-- The history listing asks for `status <> 'pending'`, which they still serve.
DROP INDEX requests_by_initiator_time;
DROP INDEX requests_by_target_time;
CREATE INDEX requests_by_initiator_time ON videochat_requests (initiator_id, created_at_ms)
    WHERE status <> 'pending';
CREATE INDEX requests_by_target_time ON videochat_requests (target_id, created_at_ms)
    WHERE status <> 'pending';
