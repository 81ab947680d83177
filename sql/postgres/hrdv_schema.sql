-- The operational store (latest state and history of every entity) and the marts, in database `hrdv`.
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS mart;
-- The open window's changes, copied from the buffer by the ingestor (hrdv/provisional.py).
CREATE SCHEMA IF NOT EXISTS provisional;

-- The staging tables of every CRM entity (staging.<entity>, and staging.<entity>_history for
-- reference entities whose past matters) are generated from hrdv/entities.py by
-- sql/postgres/entity/*.sql.j2 and applied right after this file (hrdv/cli.py: init_stores).

-- Each staging run's range of windows, as it commits (with the staged rows): how far staging is.
CREATE TABLE IF NOT EXISTS staging.staged_windows (
    window_end    timestamptz PRIMARY KEY,
    window_start  timestamptz NOT NULL,
    changes       bigint NOT NULL,
    staged_at     timestamptz NOT NULL DEFAULT now()
);

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
