-- The data look-ups of each call (issue 17: the flows' http nodes), in order, as parallel arrays like the
-- survey answers: the look-up's name (else its host), its outcome, and the caller's wait in ms (NULL: not
-- reported). Calls derived before this migration have none until their events are derived again.
ALTER TABLE call_facts
    ADD COLUMN lookup_name       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN lookup_outcome    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN lookup_latency_ms float8[] NOT NULL DEFAULT '{}';
