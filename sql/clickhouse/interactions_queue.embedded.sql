-- Embedded (chDB) entry point for interactions. chDB cannot run a Kafka-engine consumer, so
-- hrdv.ingest consumes the topic and inserts each message here. The Null engine stores nothing:
-- an INSERT only feeds the materialized views attached to it, exactly as a Kafka-engine block
-- would. Its columns are the intake's (interactions_intake.sql): the Kafka engine's value column
-- and virtual columns, by name and type, so the same materialized-view SQL reads both queues.
CREATE TABLE IF NOT EXISTS hrdv.interactions_queue AS hrdv.interactions_intake
ENGINE = Null
