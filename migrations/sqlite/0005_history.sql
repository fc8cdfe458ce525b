-- SQLite twin of migrations/postgres/0005_history.sql.
-- Who is in a videochat now, and call history (docs/protocol.md, "Call history"; docs/engines.md,
-- "Media-engine events").
--
-- A participant who left the room (the media engine said so) keeps their row, with its `uid` and
-- rights, so that coming back (re-invited, or rejoining with their token) is the same
-- participant; `left_at_ms` says they are out. The engine's own account of time in the room is
-- kept per participant: `room_since_ms` while in, `room_ms` summed over past stays.
-- `room_event_at_ms` is the engine time of the last event applied, so that late or repeated
-- webhooks cannot undo a newer one.
ALTER TABLE participants ADD COLUMN left_at_ms INTEGER NULL;
ALTER TABLE participants ADD COLUMN room_since_ms INTEGER NULL;
ALTER TABLE participants ADD COLUMN room_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE participants ADD COLUMN room_event_at_ms INTEGER NOT NULL DEFAULT 0;

-- A videochat whose room the engine finished is over: it cannot be invited or merged into.
ALTER TABLE videochats ADD COLUMN ended_at_ms INTEGER NULL;
-- Engine webhooks name the room.
CREATE INDEX videochats_by_room ON videochats (room);

-- History is the rings themselves: a direct ring also remembers the videochat it started or was
-- merged into, so that the time each side spent in it can be shown.
CREATE INDEX requests_by_initiator_time ON videochat_requests (initiator_id, created_at_ms);
CREATE INDEX requests_by_target_time ON videochat_requests (target_id, created_at_ms);
-- Missed calls since a user last listed: a small index, only rings that timed out.
CREATE INDEX missed_requests_by_target ON videochat_requests (target_id, answered_at_ms) WHERE status = 'expired';
-- Retention sweeps by age.
CREATE INDEX finished_requests_by_age ON videochat_requests (created_at_ms) WHERE status <> 'pending';

-- When each user last listed their calls (`missedCount` counts missed calls after it).
CREATE TABLE call_history_reads (
    user_id        TEXT PRIMARY KEY,
    listed_at_ms   INTEGER NOT NULL
);
