-- Routes every message of hrdv.interactions_checked that is not a valid interactions event
-- (reason != '') to hrdv.dead_letters, with its reason. It is the exact complement of
-- hrdv.interactions_buffer_mv's filter, so each message lands in exactly one of the two tables.
-- A replayed dead letter that fails again comes back here with its current reason and replaces
-- its earlier copy (same coordinates, later received_at).
--
-- CREATE OR REPLACE: see hrdv.interactions_intake_mv.
CREATE OR REPLACE MATERIALIZED VIEW hrdv.interactions_dead_letters_mv
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
FROM hrdv.interactions_checked
WHERE reason != ''
