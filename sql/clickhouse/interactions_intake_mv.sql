-- Copies every message of hrdv.interactions_queue, untouched, into hrdv.interactions_intake,
-- where the parsing views read it. Kept trivial on purpose: the Kafka engine consumes only while
-- a view is attached to its table, and this is the only one, so parsing can change (or be
-- replayed) without touching the consumer.
--
-- CREATE OR REPLACE (here and in the parsing views): the views always run the SQL of this
-- repository (ClickHouse expands SQL functions when a view is created, so a changed rule
-- reaches a view only when it is created again), and a deployment created by an older schema
-- (parsing views on the queue) is migrated on the next apply_schema. Order in
-- hrdv.clickhouse.SCHEMA: this view and the check first, then the buffer and dead-letter views,
-- so that a Kafka engine consuming meanwhile never has a message reach no view (at worst a block
-- takes both paths; the buffer and the dead letters collapse duplicates).
CREATE OR REPLACE MATERIALIZED VIEW hrdv.interactions_intake_mv
TO hrdv.interactions_intake
AS
SELECT message, _key, _topic, _partition, _offset, _timestamp
FROM hrdv.interactions_queue
