-- Heartbeat messages that are not valid heartbeat events, into hrdv.dead_letters with their
-- reason: the complement of hrdv.source_heartbeats_mv.
CREATE OR REPLACE MATERIALIZED VIEW hrdv.debezium_heartbeat_dead_letters_mv
TO hrdv.dead_letters
AS
SELECT
    _topic     AS topic,
    _partition AS `partition`,
    _offset    AS `offset`,
    _timestamp AS kafka_timestamp,
    reason,
    message    AS raw_message,
    _key       AS raw_key
FROM
(
    SELECT *, dbz_envelope_error(message, _key, dbz_row_image(message, 'id'), 'debezium_heartbeat', 'id', 'Int64') AS reason
    FROM hrdv.debezium_heartbeat_intake
)
WHERE reason != ''
