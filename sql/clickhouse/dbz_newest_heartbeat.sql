-- (heartbeats seen, LSN of the newest, its commit time in Unix milliseconds) from
-- hrdv.source_heartbeats: what dbz_source_error judges a change's position against. A scalar
-- sub-query, evaluated once per inserted block (ClickHouse computes an identical scalar
-- sub-query once per query), so the bound moves with every heartbeat ingested.
CREATE OR REPLACE FUNCTION dbz_newest_heartbeat AS () -> (
    SELECT (count(), max(lsn), toInt64(argMax(committed_ms, lsn)))
    FROM hrdv.source_heartbeats
)
