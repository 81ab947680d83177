-- Production entry point for the heartbeat table's topic (Debezium's heartbeat.action.query): a
-- Kafka-engine table read only by hrdv.source_heartbeats_mv and
-- hrdv.debezium_heartbeat_dead_letters_mv. Same format and error handling as
-- interactions_queue.kafka.sql.
--
-- Template parameters (string.Template, substituted by hrdv.clickhouse): kafka_broker_list,
-- kafka_heartbeat_topic, kafka_group and the SASL login, as interactions_queue.kafka.sql.
CREATE TABLE IF NOT EXISTS hrdv.debezium_heartbeat_queue
(
    message String
)
ENGINE = Kafka
SETTINGS
    kafka_broker_list = '${kafka_broker_list}',
    kafka_topic_list = '${kafka_heartbeat_topic}',
    kafka_group_name = '${kafka_group}',
    kafka_format = 'RawBLOB',
    kafka_security_protocol = '${kafka_security_protocol}',
    kafka_sasl_mechanism = '${kafka_sasl_mechanism}',
    kafka_sasl_username = '${kafka_sasl_username}',
    kafka_sasl_password = '${kafka_sasl_password}',
    kafka_num_consumers = 1,
    kafka_handle_error_mode = 'default',
    kafka_flush_interval_ms = 500
