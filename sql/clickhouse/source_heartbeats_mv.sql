-- The valid heartbeat events of hrdv.debezium_heartbeat_intake (its queue's messages and replayed dead letters) into hrdv.source_heartbeats. A
-- heartbeat passes the same envelope, key and source checks as data (dbz_envelope_error), so a
-- forged heartbeat cannot move the bound far either; the others go to hrdv.dead_letters
-- (hrdv.debezium_heartbeat_dead_letters_mv, the exact complement).
CREATE OR REPLACE MATERIALIZED VIEW hrdv.source_heartbeats_mv
TO hrdv.source_heartbeats
AS
SELECT
    JSONExtractUInt(message, 'source', 'lsn')  AS lsn,
    JSONExtractInt(message, 'source', 'ts_ms') AS committed_ms,
    _partition,
    _offset
FROM hrdv.debezium_heartbeat_intake
WHERE dbz_envelope_error(message, _key, dbz_row_image(message, 'id'), 'debezium_heartbeat', 'id', 'Int64') = ''
