-- The append-only event log and the call summaries derived beside it. See docs/event-log.md.
CREATE TABLE events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,  -- per-site sequence number: gap-free order of commit
    id        TEXT NOT NULL UNIQUE,               -- UUIDv7: unique across sites, sortable by time
    site      TEXT NOT NULL,
    boot_id   TEXT NOT NULL,                      -- kernel boot id: mono_ns is comparable only within one
    wall_time TEXT NOT NULL,                      -- UTC, ISO 8601 with microseconds and Z
    mono_ns   INTEGER NOT NULL,                   -- CLOCK_MONOTONIC at the event
    call_id   TEXT,
    type      TEXT NOT NULL,
    data      TEXT NOT NULL CHECK (json_valid(data))
);
CREATE INDEX events_by_call ON events (call_id, seq);
CREATE INDEX events_by_type ON events (type, seq);

CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TABLE calls (
    call_id        TEXT PRIMARY KEY,
    site           TEXT NOT NULL,
    channel        TEXT NOT NULL,      -- sip, simulator
    started_at     TEXT NOT NULL,
    ended_at       TEXT,               -- NULL while the call runs (or if the box died: see reconcile)
    caller         TEXT NOT NULL,
    dialed         TEXT NOT NULL,
    flow           TEXT NOT NULL,
    flow_version   TEXT NOT NULL,
    outcome        TEXT,
    outcome_detail TEXT,
    path           TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(path)),
    variables      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(variables)),
    first_seq      INTEGER NOT NULL,
    last_seq       INTEGER
);
CREATE INDEX calls_by_start ON calls (started_at);

CREATE TABLE switches (
    schedule   TEXT PRIMARY KEY,
    closed     INTEGER NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    changed_at TEXT NOT NULL
);
