-- Checks every message of hrdv.interactions_intake once (interactions_message_error) into
-- hrdv.interactions_checked, with its row image as a column (computed once, see
-- interactions_message_error.sql). Tombstones (null values, log compaction markers after a
-- delete) never get here; a zero-byte value does, and is a dead letter ('empty value').
--
-- CREATE OR REPLACE: see hrdv.interactions_intake_mv.
CREATE OR REPLACE MATERIALIZED VIEW hrdv.interactions_checked_mv
TO hrdv.interactions_checked
AS
SELECT
    message,
    _key,
    _topic,
    _partition,
    _offset,
    _timestamp,
    dbz_row_image(message)                     AS image,
    interactions_message_error(message, _key, image) AS reason
FROM hrdv.interactions_intake
