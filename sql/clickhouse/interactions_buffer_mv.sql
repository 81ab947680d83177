-- Parses each valid Debezium event into hrdv.interactions_buffer: the messages of
-- hrdv.interactions_checked with reason '' (hrdv.interactions_dead_letters_mv takes the others).
-- They come from hrdv.interactions_intake, which carries both the live stream (from the
-- Kafka-engine or the embedded queue) and replayed dead letters: both go through this same SQL.
--
-- The row image (dbz_row_image: `after`, or the key alone for deletes), cut out once by the
-- check view, is parsed from that smaller string. interactions_row_error has already checked each column's JSON type, so
-- JSONExtract's NULL here means JSON null or an absent column (channel_detail before CRM
-- migration 001), never a wrong value. Timestamps arrive as ISO strings in UTC with microseconds.
--
-- CREATE OR REPLACE: see hrdv.interactions_intake_mv.
CREATE OR REPLACE MATERIALIZED VIEW hrdv.interactions_buffer_mv
TO hrdv.interactions_buffer
AS
WITH
    JSONExtractString(message, 'op') AS dbz_op
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
    JSONExtract(image, 'channel_detail', 'Nullable(String)')                 AS channel_detail,
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
FROM hrdv.interactions_checked
WHERE reason = ''
