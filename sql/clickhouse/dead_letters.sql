-- Messages that could not be parsed as Debezium change events, kept byte for byte with their
-- Kafka coordinates and the reason (from dbz_envelope_error), so nothing is silently lost and a
-- fixed message can be replayed. Shared by all entity queues: topic tells them apart.
--
-- ReplacingMergeTree ordered by the Kafka coordinates: a redelivered bad message replaces its
-- earlier copy instead of inflating the count. Monthly partitions make clean-up a DROP PARTITION;
-- no TTL, because dead letters are evidence that someone has to look at.
CREATE TABLE IF NOT EXISTS hrdv.dead_letters
(
    topic           LowCardinality(String),
    `partition`     UInt64,
    `offset`        UInt64,
    kafka_timestamp Nullable(DateTime('UTC')),
    reason          LowCardinality(String),
    raw_message     String CODEC(ZSTD(3)),
    received_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, `partition`, `offset`)
