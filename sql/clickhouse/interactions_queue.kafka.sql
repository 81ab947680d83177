-- Production entry point for interactions: a Kafka-engine table reading Debezium's topic
-- crm.public.interactions. RawBLOB keeps each message value as one untouched String, so parsing
-- (and rejecting) happens in the materialized views, identically to the embedded queue. Rows are
-- consumed only by the materialized views attached to this table; a plain SELECT would steal them.
--
-- kafka_handle_error_mode = 'default': RawBLOB cannot fail to parse (any byte string is a valid
-- row), so broken messages never reach the engine's error path; they are routed to
-- hrdv.dead_letters by hrdv.interactions_dead_letters_mv instead. The engine skips null values
-- (Debezium's tombstones) and, with RawBLOB, zero-byte values too (an empty payload is an empty
-- block): on this path a zero-byte value is not counted, where the embedded ingestor makes it a
-- dead letter ('empty value'). The virtual column _key carries the message key ('' for null).
--
-- Template parameters (string.Template, substituted by hrdv.clickhouse): kafka_broker_list,
-- kafka_topic, kafka_group.
CREATE TABLE IF NOT EXISTS hrdv.interactions_queue
(
    message String
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = '${kafka_broker_list}',
    kafka_topic_list = '${kafka_topic}',
    kafka_group_name = '${kafka_group}',
    kafka_format = 'RawBLOB',
    kafka_num_consumers = 1,
    kafka_handle_error_mode = 'default',
    kafka_max_block_size = 65536,
    kafka_flush_interval_ms = 500
