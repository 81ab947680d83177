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
-- Template parameters (string.Template, substituted by hrdv.clickhouse, see kafka_engine):
-- kafka_broker_list, kafka_topic, kafka_group, and the login of the ingest principal, which may only
-- read the CDC topics and use its group: kafka_security_protocol (sasl_plaintext or sasl_ssl),
-- kafka_sasl_mechanism (SCRAM-SHA-512), kafka_sasl_username, kafka_sasl_password. With sasl_ssl,
-- the CA of the brokers (HRDV_KAFKA_CA_FILE) goes into the server's config, <kafka><ssl_ca_location>.
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
    kafka_security_protocol = '${kafka_security_protocol}',
    kafka_sasl_mechanism = '${kafka_sasl_mechanism}',
    kafka_sasl_username = '${kafka_sasl_username}',
    kafka_sasl_password = '${kafka_sasl_password}',
    kafka_num_consumers = 1,
    kafka_handle_error_mode = 'default',
    kafka_max_block_size = 65536,
    kafka_flush_interval_ms = 500
