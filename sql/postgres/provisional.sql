CREATE SCHEMA IF NOT EXISTS provisional;

-- The open window's bookkeeping (hrdv/provisional.py). The per-entity and per-family objects are
-- generated: provisional.<entity> (sql/postgres/entity/staging_table.sql.j2) and
-- sql/postgres/catalog/provisional.sql.j2.

-- How far the ingestor has copied the buffer into provisional.<entity>: per entity the newest
-- commit copied, and under 'debezium_heartbeat' the newest Debezium heartbeat in the buffer (the
-- buffer's freshness, changes or not).
CREATE TABLE IF NOT EXISTS provisional.loads (
    entity        text PRIMARY KEY,
    newest_commit timestamptz,
    rows          bigint NOT NULL DEFAULT 0,
    loaded_at     timestamptz NOT NULL DEFAULT now()
);

-- Each provisional refresh of a window: when, from the buffer up to which CRM commit, how long.
CREATE TABLE IF NOT EXISTS mart.kpi_provisional_refreshes (
    window_start  timestamptz PRIMARY KEY,
    window_end    timestamptz NOT NULL,
    refreshed_at  timestamptz NOT NULL,
    reflects      timestamptz,
    rows          bigint NOT NULL,
    seconds       double precision NOT NULL
);
COMMENT ON TABLE mart.kpi_provisional_refreshes IS 'Provisional KPI of unpublished windows: last refresh, and the newest CRM commit it reflects';

-- For the engineers' dashboard (it reads PostgreSQL only): each stage's freshness, every 30 s
-- (pipeline_freshness_sensor, two days kept), and the dead letters per topic and reason, counted in
-- ClickHouse once a minute by the ingestor.
CREATE TABLE IF NOT EXISTS mart.pipeline_freshness (
    observed_at timestamptz NOT NULL,
    stage       text NOT NULL,
    newest      timestamptz,
    age_s       double precision,
    PRIMARY KEY (observed_at, stage)
);
COMMENT ON TABLE mart.pipeline_freshness IS 'Freshness of each pipeline stage (capture, kafka, buffer, staging, final, provisional), every 30 s';
CREATE TABLE IF NOT EXISTS mart.dead_letter_counts (
    topic      text NOT NULL,
    reason     text NOT NULL,
    messages   bigint NOT NULL,
    newest     timestamptz,
    counted_at timestamptz NOT NULL,
    PRIMARY KEY (topic, reason)
);
COMMENT ON TABLE mart.dead_letter_counts IS 'Dead letters in ClickHouse per topic and reason, counted by the ingestor once a minute';
