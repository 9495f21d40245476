-- The durable callback queue. See docs/callbacks.md. Every change here is made in the same transaction as
-- the callback.* event that records it in `events`.
CREATE TABLE callback_requests (
    id              TEXT PRIMARY KEY,                  -- UUIDv7; the CALLBACK_ID channel variable
    site            TEXT NOT NULL,
    queue           TEXT NOT NULL,
    number          TEXT NOT NULL,                     -- E.164
    callee_tz       TEXT NOT NULL CHECK (json_valid(callee_tz)),  -- JSON list of IANA zone names
    arrival_at      TEXT NOT NULL,                     -- UTC: the caller's original arrival = place in line
    requested_at    TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('requested','dialing','connected','no-answer','busy',
                                                   'invalid','failed','retry','done','expired','cancelled')),
    call_id         TEXT,                              -- the inbound call that asked for it
    consent_at      TEXT NOT NULL,
    consent_number  TEXT NOT NULL,                     -- the number as confirmed by the caller
    consent_heard   TEXT NOT NULL DEFAULT '',          -- the prompt(s) the caller heard
    consent_pressed TEXT NOT NULL DEFAULT '',          -- the key(s) pressed or words said
    quoted_low      REAL,                              -- the wait quoted, seconds
    quoted_high     REAL,
    scheduled_at    TEXT,                              -- a chosen slot, UTC; NULL = as soon as its turn comes
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,                              -- UTC; NULL once terminal
    reason          TEXT NOT NULL DEFAULT ''           -- why the last state change happened
);
-- One active callback per number per queue: a second request updates the first.
CREATE UNIQUE INDEX callback_one_active ON callback_requests (site, queue, number)
    WHERE state NOT IN ('done','expired','cancelled');
CREATE INDEX callback_by_arrival ON callback_requests (state, arrival_at);

CREATE TABLE callback_attempts (
    id          TEXT PRIMARY KEY,                      -- UUIDv7
    request_id  TEXT NOT NULL REFERENCES callback_requests (id),
    n           INTEGER NOT NULL,                      -- 1 for the first attempt of the request
    started_at  TEXT NOT NULL,
    channel     TEXT NOT NULL DEFAULT '',              -- ami / sip, and the channel name when known
    action_id   TEXT NOT NULL DEFAULT '',              -- AMI Originate ActionID
    sip_call_id TEXT NOT NULL DEFAULT '',              -- SIP Call-ID of the outbound leg
    outcome     TEXT CHECK (outcome IN ('connected','no-answer','busy','invalid','failed','interrupted')),
    ended_at    TEXT,
    detail      TEXT NOT NULL DEFAULT '',
    UNIQUE (request_id, n)
);
-- Never two overlapping attempts for one callback.
CREATE UNIQUE INDEX callback_one_in_flight ON callback_attempts (request_id) WHERE outcome IS NULL;
