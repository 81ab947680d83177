-- Parses each valid Debezium event from the interactions queue into hrdv.interactions_buffer.
-- The same SQL serves the Kafka-engine queue (production) and the Null-engine queue (embedded),
-- because both expose message, _topic, _partition, _offset and _timestamp.
--
-- The row image is cut out once and parsed from that smaller string. For deletes it is the key
-- alone: Debezium's `before` (REPLICA IDENTITY DEFAULT) fills the other NOT NULL columns with
-- type defaults (0, '', 1970-01-01), which must not pass for real values, so they become NULL.
-- Timestamps arrive as ISO strings in UTC with microseconds, hence parseDateTime64BestEffortOrNull
-- (JSON null -> NULL).
CREATE MATERIALIZED VIEW IF NOT EXISTS hrdv.interactions_buffer_mv
TO hrdv.interactions_buffer
AS
WITH
    JSONExtractString(message, 'op') AS dbz_op,
    if(dbz_op = 'd',
       concat('{"id":', toString(JSONExtractInt(message, 'before', 'id')), '}'),
       JSONExtractRaw(message, 'after')) AS image
SELECT
    JSONExtractInt(image, 'id')                                              AS id,
    JSONExtract(image, 'customer_id', 'Nullable(Int64)')                     AS customer_id,
    JSONExtract(image, 'channel_code', 'Nullable(String)')                   AS channel_code,
    JSONExtract(image, 'region_code', 'Nullable(String)')                    AS region_code,
    JSONExtract(image, 'topic_code', 'Nullable(String)')                     AS topic_code,
    JSONExtract(image, 'queue_code', 'Nullable(String)')                     AS queue_code,
    JSONExtract(image, 'direction', 'Nullable(String)')                      AS direction,
    JSONExtract(image, 'status', 'Nullable(String)')                         AS status,
    JSONExtract(image, 'operator_id', 'Nullable(Int32)')                     AS operator_id,
    JSONExtract(image, 'subject', 'Nullable(String)')                        AS subject,
    parseDateTime64BestEffortOrNull(
        JSONExtract(image, 'created_at', 'Nullable(String)'), 6, 'UTC')        AS created_at,
    parseDateTime64BestEffortOrNull(
        JSONExtract(image, 'first_response_at', 'Nullable(String)'), 6, 'UTC') AS first_response_at,
    parseDateTime64BestEffortOrNull(
        JSONExtract(image, 'closed_at', 'Nullable(String)'), 6, 'UTC')         AS closed_at,
    parseDateTime64BestEffortOrNull(
        JSONExtract(image, 'updated_at', 'Nullable(String)'), 6, 'UTC')        AS updated_at,
    JSONExtract(image, 'resolved_on_first_contact', 'Nullable(Bool)')        AS resolved_on_first_contact,
    dbz_op                                                                   AS op,
    JSONExtractUInt(message, 'source', 'lsn')                                AS lsn,
    fromUnixTimestamp64Milli(JSONExtractInt(message, 'source', 'ts_ms'), 'UTC') AS committed_at,
    toUInt8(dbz_op = 'd')                                                    AS is_deleted,
    _topic,
    _partition,
    _offset
FROM hrdv.interactions_queue
WHERE message != '' AND dbz_envelope_error(message, 'interactions') = ''
