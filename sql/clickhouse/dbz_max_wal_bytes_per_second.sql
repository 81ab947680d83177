-- The WAL allowance of dbz_source_error: ${max_wal_bytes_per_second} bytes of WAL per second
-- of commit time since the newest heartbeat (HRDV_MAX_WAL_BYTES_PER_S, default 1 GiB/s: more than
-- any PostgreSQL sustains; this machine's CRM peaks at a few MB/s).
CREATE OR REPLACE FUNCTION dbz_max_wal_bytes_per_second AS () -> ${max_wal_bytes_per_second}
