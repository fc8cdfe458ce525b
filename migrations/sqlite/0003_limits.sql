-- The service's limits (docs/security.md, "Service limits") count rows at every ring, inside the load that reads the
-- ring's other facts: each count must be an index lookup, whatever the table's size.

-- Rings a user has ringing (VIDEOCHAT_MAX_PENDING_RINGS_PER_USER).
CREATE INDEX pending_requests_by_initiator ON videochat_requests (initiator_id) WHERE status = 'pending';

-- Invites into a videochat in the last minute (VIDEOCHAT_MAX_INVITES_PER_VIDEOCHAT_PER_MIN).
CREATE INDEX invites_by_videochat ON videochat_requests (videochat_id, created_at_ms) WHERE kind = 'invite';
