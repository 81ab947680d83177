-- Validation of a Debezium change event (JsonConverter, schemas.enable=false), defined once and
-- used by both materialized views of every entity queue: the buffer view keeps messages for which
-- it returns '', the dead-letter view keeps the others with this reason. Checks run in order and
-- the first failure wins, so each rejected message has exactly one reason from a fixed set (easy
-- to group and alert on). The row image is `after` for c/r/u and `before` for d (with REPLICA
-- IDENTITY DEFAULT a delete's `before` carries only the key). Empty messages (tombstones) are
-- filtered out before this function is called. `source_table` is the CRM table the queue's topic
-- carries: an event of another table (a misrouted topic, Debezium's heartbeat table) is rejected
-- rather than parsed into the wrong buffer.
--
-- CREATE OR REPLACE rather than IF NOT EXISTS: SQL functions are expanded when a view's query
-- runs, so re-applying the schema updates the rule in place for every view.
CREATE OR REPLACE FUNCTION dbz_envelope_error AS (message, source_table) -> multiIf(
    NOT isValidUTF8(message), 'not UTF-8',
    NOT isValidJSON(message), 'not JSON',
    JSONType(message) != 'Object', 'not a JSON object',
    NOT JSONHas(message, 'op'), 'no op',
    JSONExtractString(message, 'op') NOT IN ('c', 'r', 'u', 'd'), 'unknown op',
    JSONType(message, 'source', 'lsn') NOT IN ('Int64', 'UInt64'), 'no source.lsn',
    JSONType(message, 'source', 'ts_ms') NOT IN ('Int64', 'UInt64'), 'no source.ts_ms',
    JSONExtractString(message, 'source', 'table') != source_table, 'wrong source.table',
    JSONType(message, if(JSONExtractString(message, 'op') = 'd', 'before', 'after')) != 'Object',
        'row image missing',
    JSONType(message, if(JSONExtractString(message, 'op') = 'd', 'before', 'after'), 'id') != 'Int64',
        'key id missing or not an integer',
    ''
)
