-- The row image of a Debezium change event, as a JSON object string: `after` for c/r/u, and for
-- a delete the key alone ({"<key_column>": <value>}, the value's raw JSON). Debezium's `before` of
-- a delete (REPLICA IDENTITY DEFAULT) fills the other NOT NULL columns with type defaults (0, '',
-- 1970-01-01), which must not pass for real values, so they are left out and parse as NULL. ''
-- for an oversized message (never parsed) and for anything that is not an envelope. Computed once
-- per message, as a column, by every entity's check view: its row checks and its buffer view both
-- read that column.
CREATE OR REPLACE FUNCTION dbz_row_image AS (message, key_column) -> multiIf(
    length(message) > dbz_max_message_bytes(), '',
    JSONExtractString(message, 'op') = 'd',
        concat('{"', key_column, '":', JSONExtractRaw(message, 'before', key_column), '}'),
    JSONExtractRaw(message, 'after')
)
