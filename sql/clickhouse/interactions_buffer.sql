-- Every change event of CRM interactions, one row per event, parsed from Debezium's envelope.
-- The staging query reads the events committed in a window and keeps the latest version per id.
--
-- ReplacingMergeTree ordered by (id, lsn): every version of an interaction is kept, and only a
-- redelivered event (at-least-once from Connect and from the consumers: same id, same lsn) is
-- collapsed by merges and FINAL. Versions are kept on purpose: the window query takes the latest
-- version per id with LIMIT 1 BY, and replaces Debezium's placeholder for an unchanged TOASTed
-- text by that text's last real version (queries/interaction_changes_in_window.sql), which merges
-- must not destroy. (Until this file said ORDER BY id, which merged each day's versions of an id
-- into one; hrdv.clickhouse.apply_schema moves such a table's rows into this layout.)
--
-- Partitions are days of the PostgreSQL commit time, so a window read (committed_at in
-- [start, end)) skips every other day through partition pruning, and the minmax index skips
-- granules inside the day. Redeliveries share committed_at and always meet in one partition.
--
-- No TTL: Dagster may re-run (backfill) any window since the first partition, and the buffer is
-- the only copy of the events once Kafka's retention has passed. Old days are dropped on purpose
-- with ALTER TABLE hrdv.interactions_buffer DROP PARTITION <yyyymmdd>.
--
-- For deletes (op = 'd') only id is known; the other row columns are NULL and is_deleted = 1.
-- channel_detail (CRM migration 001) is added after subject by interactions_buffer_channel_detail.sql.
CREATE TABLE IF NOT EXISTS hrdv.interactions_buffer
(
    id                        Int64,
    customer_id               Nullable(Int64),
    channel_code              LowCardinality(Nullable(String)),
    region_code               LowCardinality(Nullable(String)),
    topic_code                LowCardinality(Nullable(String)),
    queue_code                LowCardinality(Nullable(String)),
    direction                 LowCardinality(Nullable(String)),
    status                    LowCardinality(Nullable(String)),
    operator_id               Nullable(Int32),
    subject                   Nullable(String),
    created_at                Nullable(DateTime64(6, 'UTC')),
    first_response_at         Nullable(DateTime64(6, 'UTC')),
    closed_at                 Nullable(DateTime64(6, 'UTC')),
    updated_at                Nullable(DateTime64(6, 'UTC')),
    resolved_on_first_contact Nullable(Bool),
    op                        LowCardinality(String),             -- c, r (snapshot), u, d
    lsn                       UInt64,                             -- source.lsn of the change
    committed_at              DateTime64(3, 'UTC'),               -- source.ts_ms: PostgreSQL commit time
    is_deleted                UInt8,
    _topic                    LowCardinality(String),
    _partition                UInt64,
    _offset                   UInt64,
    ingested_at               DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX committed_at_minmax committed_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(committed_at)
ORDER BY (id, lsn)
