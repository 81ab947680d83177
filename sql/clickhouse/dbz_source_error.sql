-- Why a Debezium message's source position cannot be real ('' if it can), judged against the
-- newest heartbeat of the same connector seen so far (hrdv.source_heartbeats: the heartbeat
-- table's change events, which travel through the same replication stream, in WAL order):
-- - 'commit time in the future': source.ts_ms more than 5 minutes past ClickHouse's clock
--   (room for clock skew between the CRM and ClickHouse hosts);
-- - 'lsn ahead of the source': source.lsn further past the newest heartbeat's LSN than the CRM
--   can have written WAL since that heartbeat's commit: a fixed 64 MiB (for changes whose
--   records were written after the heartbeat's although they committed before it) plus dbz_max_wal_bytes_per_second per second between the heartbeat's commit and
--   this change's. The allowance grows with the commit time, so a change streamed after a long
--   capture outage (no heartbeats meanwhile, much WAL) is never refused, while a forged LSN far
--   beyond the source (the issue's 9e18) is refused at once. A forger can still pick an LSN inside
--   the allowance; such a version blocks its row only until real WAL passes it, and the drift
--   check reports it meanwhile (hrdv.drift).
-- Without any heartbeat yet (a new deployment) the LSN is not judged.
CREATE OR REPLACE FUNCTION dbz_source_error AS (message) -> multiIf(
    JSONExtractUInt(message, 'source', 'ts_ms') > toUnixTimestamp64Milli(now64(3)) + 300000,
        'commit time in the future',
    dbz_newest_heartbeat().1 > 0
        AND assumeNotNull(dbz_lsn(message)) > dbz_newest_heartbeat().2 + 67108864
            + dbz_max_wal_bytes_per_second() * greatest(0,
                toInt64(JSONExtractUInt(message, 'source', 'ts_ms')) - dbz_newest_heartbeat().3) / 1000,
        'lsn ahead of the source',
    ''
)
