-- Embedded (chDB) entry point for interactions. chDB cannot run a Kafka-engine consumer, so
-- hrdv.ingest consumes the topic and inserts each message here. The Null engine stores nothing:
-- an INSERT only feeds the materialized views attached to it, exactly as a Kafka-engine block
-- would. The columns copy the name and type of the Kafka engine's value column and virtual
-- columns, so the same materialized-view SQL reads both queues.
CREATE TABLE IF NOT EXISTS hrdv.interactions_queue
(
    message    String,
    _topic     LowCardinality(String),
    _partition UInt64,
    _offset    UInt64,
    _timestamp Nullable(DateTime)
)
ENGINE = Null
