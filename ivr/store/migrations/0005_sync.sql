-- The outbox to the central collector (issue 14, docs/central.md). The event log *is* the outbox and `seq`
-- its order: every committed event is in it by definition, so nothing can be committed and missed. This one
-- row is its cursor: an event is unsent while its seq > acked_seq and it is not quarantined.
CREATE TABLE sync_cursor (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    acked_seq  INTEGER NOT NULL DEFAULT 0 CHECK (acked_seq >= 0),  -- acknowledged by the center, or skipped
                                                                   -- by a sync.gap event (outbox bounds)
    updated_at TEXT                                                -- UTC; NULL until it first moves
);
INSERT INTO sync_cursor (id, acked_seq) VALUES (1, 0);
CREATE TRIGGER sync_cursor_forward_only BEFORE UPDATE ON sync_cursor WHEN NEW.acked_seq < OLD.acked_seq
BEGIN SELECT RAISE(ABORT, 'the sync cursor only moves forward'); END;

-- Events the center refused as invalid (400/415/422, or one event alone too large): they stay in the log,
-- are listed by `ivr sync status`, and are never sent again.
CREATE TABLE sync_quarantine (
    seq            INTEGER PRIMARY KEY REFERENCES events (seq),
    event_id       TEXT NOT NULL,
    batch_key      TEXT NOT NULL,      -- the Idempotency-Key of the batch that was refused
    http_status    INTEGER NOT NULL,
    error          TEXT NOT NULL,      -- the center's reason
    quarantined_at TEXT NOT NULL
);

-- The last attempt, success and error of whichever process pushed (the daemon's relay, `ivr sync --once`),
-- for `ivr sync status`.
CREATE TABLE sync_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    central         TEXT,              -- the collector's URL at the last attempt (never a token)
    last_attempt_at TEXT,
    last_success_at TEXT,
    last_error_at   TEXT,
    last_error      TEXT,
    failures        INTEGER NOT NULL DEFAULT 0   -- attempts failed since the last success
);
INSERT INTO sync_state (id) VALUES (1);
