-- Routes every non-empty interactions message that is not a valid Debezium event to
-- hrdv.dead_letters, with the reason from dbz_envelope_error. It is the exact complement of
-- hrdv.interactions_buffer_mv's filter, so each message lands in exactly one of the two tables.
-- Empty messages are Debezium's tombstones (log compaction markers after a delete): ignored.
CREATE MATERIALIZED VIEW IF NOT EXISTS hrdv.interactions_dead_letters_mv
TO hrdv.dead_letters
AS
SELECT
    _topic                      AS topic,
    _partition                  AS `partition`,
    _offset                     AS `offset`,
    _timestamp                  AS kafka_timestamp,
    dbz_envelope_error(message, 'interactions') AS reason,
    message                     AS raw_message
FROM hrdv.interactions_queue
WHERE message != '' AND reason != ''
