-- Where every interactions message enters parsing: hrdv.interactions_checked_mv reads this
-- Null-engine table (which stores nothing) and feeds the buffer and dead-letter views. Two
-- writers, one parsing path:
-- - hrdv.interactions_intake_mv copies each message from hrdv.interactions_queue (the
--   Kafka-engine table in production, the Null table hrdv.ingest fills in the embedded default);
-- - `hrdv dead-letters replay` inserts dead letters back with their original Kafka coordinates,
--   which a Kafka-engine queue could not take (an INSERT there would produce to the topic).
-- The columns are the queue's value column and Kafka virtual columns, by name and type (_key:
-- '' for a null key, as the Kafka engine gives it; added by interactions_intake_key.sql to
-- intakes created before it).
CREATE TABLE IF NOT EXISTS hrdv.interactions_intake
(
    message    String,
    _key       String,
    _topic     LowCardinality(String),
    _partition UInt64,
    _offset    UInt64,
    _timestamp Nullable(DateTime)
)
ENGINE = Null
