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
