-- The center's raw store (issue 14): every event of every site exactly once. docs/central.md.
-- Distribution-ready: every primary key is led by site_id (Citus: create_distributed_table(..., 'site_id')).

CREATE TABLE sites (
    site_id      text PRIMARY KEY,
    name         text NOT NULL DEFAULT '',
    grp          text NOT NULL DEFAULT '',          -- a group of sites (region, brand, ...)
    zone         text NOT NULL DEFAULT 'UTC',       -- the site's IANA zone: its days and hours
    region       text NOT NULL DEFAULT 'US',        -- ISO 3166 region for reading its caller IDs (FCR)
    token_sha256 text,                              -- hex SHA-256 of the site's bearer token; NULL: disabled
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Partitioned by the event id itself: a UUIDv7 starts with its unix-ms time, so a range of ids is a range
-- of time (a month). The partition key is then inside the primary key (site_id, event_id), which is what
-- lets ON CONFLICT (site_id, event_id) DO NOTHING work on a partitioned table. Partitions are created by the
-- collector ahead of time and on demand (ivr_central.db.ensure_partitions); there is no default partition,
-- so a new month can always be attached.
CREATE TABLE events (
    site_id     text NOT NULL,
    event_id    uuid NOT NULL,
    seq         bigint NOT NULL,                    -- the box's seq: its order of truth within the site
    wall_time   timestamptz NOT NULL,
    type        text NOT NULL,
    call_id     text,
    boot_id     text NOT NULL,
    mono_ns     bigint NOT NULL,
    payload     jsonb NOT NULL,                     -- the event's data, as the box sent it
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, event_id)
) PARTITION BY RANGE (event_id);
CREATE INDEX events_by_call ON events (site_id, call_id);
CREATE INDEX events_by_type ON events (site_id, type, wall_time);
CREATE INDEX events_by_seq ON events (site_id, seq);

-- What each site has delivered: for lag and the health of the fleet.
CREATE TABLE site_state (
    site_id        text PRIMARY KEY REFERENCES sites (site_id),
    acked_seq      bigint NOT NULL DEFAULT 0,       -- highest seq of a committed batch
    head_seq       bigint,                          -- the box's highest seq when it last posted
    last_batch_at  timestamptz,
    last_event_at  timestamptz,                     -- wall_time of the newest event received
    batches        bigint NOT NULL DEFAULT 0,
    events         bigint NOT NULL DEFAULT 0,
    duplicates     bigint NOT NULL DEFAULT 0
);

-- Batches refused as invalid: nothing of them is in events; kept for the admin to see why.
CREATE TABLE rejects (
    site_id         text NOT NULL,
    reject_id       bigint GENERATED ALWAYS AS IDENTITY,
    at              timestamptz NOT NULL DEFAULT now(),
    idempotency_key text,
    status          int NOT NULL,
    error           text NOT NULL,
    PRIMARY KEY (site_id, reject_id)
);
