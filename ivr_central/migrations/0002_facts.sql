-- KPI facts (issue 14 item 3): one typed row per IVR call, queue visit, callback request and callback.kept
-- record, derived at ingest from the events by the box's own ivr.kpi.facts code (ivr_central/facts.py), in
-- the batch's transaction. Every KPI of ivr_central.kpi.report and ivr_central.aggregates is computed from
-- these rows alone. Columns: docs/central-kpi.md. Every primary key is led by site_id (Citus-ready).
-- Column names are stable: the dashboard's SQL reads them.

-- One IVR call (ivr.kpi.facts.CallFacts), rebuilt from all of the call's events whenever one arrives.
CREATE TABLE call_facts (
    site_id             text NOT NULL,
    call_id             text NOT NULL,
    first_seq           bigint NOT NULL,            -- seq of the call's first event: its order on the box
    started_at          timestamptz NOT NULL,       -- call.started: the call counts in this instant's period
    ended_at            timestamptz,                -- NULL: still open
    channel             text NOT NULL DEFAULT '',   -- sip, simulator (simulated calls are not counted)
    caller              text NOT NULL DEFAULT '',   -- as the box saw it
    caller_e164         text,                       -- normalise_number(caller, sites.region); NULL: withheld
    dialed              text NOT NULL DEFAULT '',
    flow                text NOT NULL DEFAULT '',   -- the entry flow (by flow)
    flow_version        text NOT NULL DEFAULT '',
    zone                text,                       -- the site's zone on call.started, when the box wrote it
    outcome             text,                       -- call.ended's outcome; NULL: open
    detail              text NOT NULL DEFAULT '',
    disposition         text NOT NULL,              -- CallFacts.disposition: open, transferred, callback,
                                                    -- resolved, transfer_failed, abandoned, self_served, other
    resolved            boolean NOT NULL DEFAULT false,
    transfer_failed     boolean NOT NULL DEFAULT false,
    handoff             text,                       -- queue / extension: it left the IVR to the PBX
    queue               text,                       -- handed to, offered a callback at, or filed one for
    queued_at           timestamptz,                -- provably with the queue
    time_to_queue       double precision,           -- s, queued_at - started_at
    offer_decided       boolean NOT NULL DEFAULT false,  -- a queue node decided on a callback offer
    callback_offered    boolean NOT NULL DEFAULT false,
    callback_accepted   boolean NOT NULL DEFAULT false,
    callback_request_id text,                       -- filed and confirmed
    callback_leg        boolean NOT NULL DEFAULT false,  -- the outbound leg of a callback: never an IVR call
    path                text[] NOT NULL DEFAULT '{}',    -- nodes entered, qualified flow.node
    entry_node          text,                       -- path[1]
    last_node           text,                       -- CallFacts.last_node: where it ended
    survey_scale        text[] NOT NULL DEFAULT '{}',    -- survey answers, in order: csat / nps
    survey_value        int[] NOT NULL DEFAULT '{}',
    survey_node         text[] NOT NULL DEFAULT '{}',
    survey_flow         text[] NOT NULL DEFAULT '{}',
    derived_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, call_id)
);
CREATE INDEX call_facts_by_start ON call_facts (site_id, started_at);
CREATE INDEX call_facts_by_caller ON call_facts (caller_e164, started_at) WHERE caller_e164 IS NOT NULL;

-- One stay of one caller in one PBX queue (ivr.kpi.facts.QueueVisit), from queue.log rows; all visits of a
-- PBX callid are rebuilt whenever one of its rows arrives. n: the visit's place among its callid's visits.
CREATE TABLE queue_visit_facts (
    site_id      text NOT NULL,
    callid       text NOT NULL,                     -- Asterisk's uniqueid of the caller's channel
    n            int NOT NULL,
    queue        text NOT NULL,
    entered_at   timestamptz,                       -- ENTERQUEUE; NULL when it was missed
    ended_at     timestamptz,
    at           timestamptz,                       -- QueueVisit.at: entered_at, else its end: the period it counts in
    result       text NOT NULL,                     -- answered, abandoned, timeout, exit_key, exit_empty, waiting
    wait         double precision,                  -- s: hold until answer, or the wait before leaving
    talk         double precision,                  -- s: calltime of a completed answered call
    agent        text NOT NULL DEFAULT '',
    transferred  boolean NOT NULL DEFAULT false,    -- the agent transferred the caller on
    ivr_call_id  text,                              -- the IVR call that sent the caller (call_facts.call_id)
    derived_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, callid, n)
);
CREATE INDEX queue_visit_facts_by_at ON queue_visit_facts (site_id, at);
CREATE INDEX queue_visit_facts_by_call ON queue_visit_facts (site_id, ivr_call_id) WHERE ivr_call_id IS NOT NULL;

-- One callback request (ivr.kpi.facts.CallbackRequestFacts) and its last callback.kept record.
CREATE TABLE callback_facts (
    site_id               text NOT NULL,
    request_id            text NOT NULL,
    queue                 text NOT NULL DEFAULT '',
    call_id               text,                     -- the IVR call that filed it
    requested_at          timestamptz,              -- the period it counts in
    state                 text NOT NULL,            -- the last callback.state: requested ... done, expired, cancelled
    first_attempt_outcome text,                     -- of the first attempt that rang the phone (not interrupted)
    attempts              int NOT NULL DEFAULT 0,
    kept_records          int NOT NULL DEFAULT 0,   -- callback.kept records of the request
    kept                  boolean,                  -- of the last record: agent within the quoted high end
    quoted_low            double precision,         -- s from arrival, of the last record
    quoted_high           double precision,
    time_to_agent         double precision,         -- s from the original arrival to the agent (actual)
    ewt_error             double precision,         -- time_to_agent - middle of the quote (measures.quote_error)
    derived_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, request_id)
);
CREATE INDEX callback_facts_by_time ON callback_facts (site_id, requested_at);

-- Every callback.kept record (a request has one on done and one per expiry; its last one counts), with the
-- record as the box wrote it (what ivr.kpi.measures reads) and typed columns for SQL.
CREATE TABLE callback_kept_facts (
    site_id        text NOT NULL,
    request_id     text NOT NULL,
    n              int NOT NULL,                    -- the record's place among its request's records
    last           boolean NOT NULL,                -- the request's last record: the one the KPIs count
    queue          text NOT NULL DEFAULT '',
    arrival_at     timestamptz,                     -- the caller's original arrival
    quoted_low     double precision,
    quoted_high    double precision,
    time_to_agent  double precision,
    kept           boolean,                         -- NULL: no quote
    ewt_error      double precision,                -- time_to_agent - middle of the quote, when both are known
    in_range       boolean,                         -- quoted_low <= time_to_agent <= quoted_high
    record         jsonb NOT NULL,
    derived_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, request_id, n)
);
CREATE INDEX callback_kept_facts_by_arrival ON callback_kept_facts (site_id, arrival_at);

-- The look-ups ingest makes to rebuild an entity from all its events: (site_id, call_id) is events_by_call;
-- these two find a PBX caller's queue_log rows and a request's events.
CREATE INDEX events_queue_callid ON events (site_id, (payload ->> 'callid')) WHERE type = 'queue.log';
CREATE INDEX events_request_id ON events (site_id, (payload ->> 'request_id'))
    WHERE type IN ('callback.requested', 'callback.state', 'callback.attempt.ended', 'callback.updated',
                   'callback.kept');
