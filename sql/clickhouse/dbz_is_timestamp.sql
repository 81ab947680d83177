-- True if the image's column is JSON null, absent, or a string that parses as a timestamp (what
-- Debezium writes for timestamptz: an ISO string in UTC). The same parse as the buffer views',
-- so a value that passes this check never turns into NULL there.
CREATE OR REPLACE FUNCTION dbz_is_timestamp AS (image, column) -> multiIf(
    JSONType(image, column) = 'Null', true,
    JSONType(image, column) != 'String', false,
    parseDateTime64BestEffortOrNull(JSONExtractString(image, column), 6, 'UTC') IS NOT NULL
)
