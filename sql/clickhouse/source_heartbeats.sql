-- Debezium's heartbeats as the stream delivered them: every change event of the CRM's heartbeat
-- table (heartbeat.action.query, once a second), with its LSN and commit time. They travel through
-- the same replication slot as the data, in WAL order, so the newest one says how far the source
-- had written when it committed: dbz_source_error judges every change's LSN against it.
-- Filled by hrdv.source_heartbeats_mv from hrdv.debezium_heartbeat_queue.
--
-- Only the newest matters; two days are kept to look at (a day is 86 400 rows).
CREATE TABLE IF NOT EXISTS hrdv.source_heartbeats
(
    lsn          UInt64,
    committed_ms Int64,                                  -- source.ts_ms
    _partition   UInt64,
    _offset      UInt64,
    received_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY lsn
TTL toDateTime(received_at) + INTERVAL 2 DAY
