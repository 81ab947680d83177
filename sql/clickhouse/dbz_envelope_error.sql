-- Validation of a Debezium change event's envelope (JsonConverter, schemas.enable=false) and its
-- Kafka key (with `image`, the message's dbz_row_image), defined once for every entity; each entity's <entity>_message_error adds its row
-- checks, and the entity's check view calls that: the buffer view keeps messages for which it
-- returns '', the dead-letter view keeps the others with this reason. Checks run in order and the
-- first failure wins, so each rejected message has exactly one reason from a fixed set (easy to
-- group and alert on). The row image is `after` for c/r/u and `before` for d (with REPLICA
-- IDENTITY DEFAULT a delete's `before` carries only the key). `source_table` is the CRM table the
-- queue's topic carries: an event of another table (a misrouted topic, Debezium's heartbeat table)
-- is rejected rather than parsed into the wrong buffer. `key_column` is that table's primary key
-- and `key_type` the JSON type Debezium writes for it ('Int64' for bigint keys, 'String' for codes).
--
-- 'oversized' (dbz_max_message_bytes) is checked first, on the byte length alone, so a huge value
-- is never parsed. 'empty value': a zero-byte (not null) value; a null value is a tombstone and
-- never reaches parsing (the embedded ingestor can tell the two apart; ClickHouse's Kafka engine
-- skips both, see interactions_queue.kafka.sql).
--
-- The last three checks are about trust rather than accidents (a wrong or hostile producer):
-- - 'op disagrees with its images': c/r carry no `before`, d carries no `after`;
-- - the key must be the row's own key (dbz_key_error): a null or foreign key would otherwise
--   place the row where compaction and partitioning do not expect it;
-- - the commit time and the LSN must be ones the source can have produced (dbz_source_error): a
--   version with an LSN from the future would win over every real later change of its row.
--
-- CREATE OR REPLACE rather than IF NOT EXISTS: re-applying the schema updates the rule. ClickHouse
-- expands SQL functions when a view is created, so apply_schema re-creates the views after the
-- functions (see interactions_intake_mv.sql).
CREATE OR REPLACE FUNCTION dbz_envelope_error AS (message, key, image, source_table, key_column, key_type) -> multiIf(
    length(message) > dbz_max_message_bytes(), 'oversized',
    length(message) = 0, 'empty value',
    NOT isValidUTF8(message), 'not UTF-8',
    NOT isValidJSON(message), 'not JSON',
    JSONType(message) != 'Object', 'not a JSON object',
    NOT JSONHas(message, 'op'), 'no op',
    JSONExtractString(message, 'op') NOT IN ('c', 'r', 'u', 'd'), 'unknown op',
    dbz_lsn(message) IS NULL, 'no source.lsn',
    JSONType(message, 'source', 'ts_ms') NOT IN ('Int64', 'UInt64'), 'no source.ts_ms',
    JSONExtractString(message, 'source', 'table') != source_table, 'wrong source.table',
    JSONType(message, if(JSONExtractString(message, 'op') = 'd', 'before', 'after')) != 'Object',
        'row image missing',
    JSONType(message, if(JSONExtractString(message, 'op') = 'd', 'before', 'after'), key_column) != key_type,
        concat('key ', key_column, ' missing or not ', if(key_type = 'Int64', 'an integer', 'a string')),
    JSONType(message, if(JSONExtractString(message, 'op') = 'd', 'after', 'before')) != 'Null'
        AND JSONExtractString(message, 'op') != 'u',
        'op disagrees with its images',
    dbz_key_error(image, key, [key_column]) != '', dbz_key_error(image, key, [key_column]),
    dbz_source_error(message)
)
