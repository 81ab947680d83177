-- Embedded (chDB) entry point for the heartbeat table's topic: hrdv.ingest inserts each message
-- here, before the data messages of the same batch, so a change is judged against every heartbeat
-- consumed with it. Null engine with the intake's columns, like hrdv.interactions_queue.
CREATE TABLE IF NOT EXISTS hrdv.debezium_heartbeat_queue AS hrdv.interactions_intake
ENGINE = Null
