-- The operational store (latest state of every entity) and the marts, in database `hrdv`.
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS mart;

-- Latest known state of every CRM interaction, upserted window by window from the ClickHouse
-- buffer. Deleted interactions stay as flagged rows so that an older change replayed later (a
-- backfill, a redelivery) cannot bring them back: every write is guarded by the source LSN.
-- Columns other than the key are nullable because a delete carries only the key.
CREATE TABLE IF NOT EXISTS staging.interactions (
    id                        bigint PRIMARY KEY,
    customer_id               bigint,
    channel_code              text,
    region_code               text,
    topic_code                text,
    queue_code                text,
    direction                 text,
    status                    text,
    operator_id               integer,
    subject                   text,
    created_at                timestamptz,
    first_response_at         timestamptz,
    closed_at                 timestamptz,
    resolved_on_first_contact boolean,
    updated_at                timestamptz,
    is_deleted                boolean NOT NULL DEFAULT false,
    lsn                       numeric(20, 0) NOT NULL,
    committed_at              timestamptz NOT NULL,
    loaded_at                 timestamptz NOT NULL DEFAULT now()
);
-- CRM migration 001: the contact's sub-channel. ALTER, so that a store created before it gets the
-- column on the next start too; NULL for interactions last changed before the migration.
ALTER TABLE staging.interactions ADD COLUMN IF NOT EXISTS channel_detail text;
CREATE INDEX IF NOT EXISTS interactions_created_at_idx ON staging.interactions (created_at);
CREATE INDEX IF NOT EXISTS interactions_closed_at_idx ON staging.interactions (closed_at);

-- KPIs of customer interactions per reporting window x channel x region. A row exists for each
-- combination with at least one interaction opened or closed in the window.
CREATE TABLE IF NOT EXISTS mart.interaction_kpi (
    window_start                   timestamptz NOT NULL,
    window_end                     timestamptz NOT NULL,
    channel_code                   text NOT NULL,
    region_code                    text NOT NULL,
    opened                         integer NOT NULL,
    closed                         integer NOT NULL,
    avg_resolution_s               double precision,
    p90_resolution_s               double precision,
    first_contact_resolution_share double precision,
    published_at                   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, channel_code, region_code)
);
