-- Personal data (issue 17): the keys personal fields of events are sealed with (ivr/store/privacy.py).
-- Erasing a call's personal data sets its key to NULL; the events stay, unreadable where they were sealed.
CREATE TABLE privacy_keys (
    id         TEXT PRIMARY KEY,  -- random; named in each sealed value (sealed:v1:<id>:...)
    call_id    TEXT NOT NULL,     -- the call whose events it seals, or day-YYYY-MM-DD for events outside a call
    key        BLOB,              -- 32 bytes (AES-256-GCM); NULL once erased
    caller_ref TEXT,              -- the caller's pseudonym (HMAC of the number), to erase by caller
    created_at TEXT NOT NULL,     -- UTC
    erased_at  TEXT,              -- UTC, when the key was deleted
    erased_by  TEXT               -- retention, or request
);
CREATE INDEX privacy_keys_by_caller ON privacy_keys (caller_ref);
CREATE INDEX privacy_keys_by_call ON privacy_keys (call_id);
CREATE INDEX privacy_keys_by_age ON privacy_keys (created_at) WHERE key IS NOT NULL;
-- When a call's caller and variables, or a callback's number, were overwritten by an erasure.
ALTER TABLE calls ADD COLUMN erased_at TEXT;
ALTER TABLE callback_requests ADD COLUMN erased_at TEXT;
