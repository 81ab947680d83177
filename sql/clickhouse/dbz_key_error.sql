-- Why a Debezium message's Kafka key is not its row's own key ('' if it is). Debezium's key is the
-- row's primary key as a JSON object ({"id":42}, JsonConverter without schemas), the same columns
-- with the same JSON text as the row image (dbz_row_image: `after`, or the key of `before` for a
-- delete; cut out once by the caller, so the whole message is not parsed again). Compared as raw
-- JSON text per column, which is exact because key and value come from one converter.
-- An empty `key` is a null key: ClickHouse's Kafka engine gives '' for both, and so does the
-- embedded ingestor.
CREATE OR REPLACE FUNCTION dbz_key_error AS (image, key, key_columns) -> multiIf(
    key = '', 'no key',
    NOT isValidJSON(key) OR JSONType(key) != 'Object', 'key not a JSON object',
    arraySort(JSONExtractKeys(key)) != arraySort(key_columns)
        OR NOT arrayAll(column -> JSONExtractRaw(key, column) = JSONExtractRaw(image, column), key_columns),
        'key does not match the row',
    ''
)
