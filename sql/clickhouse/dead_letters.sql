-- Messages that could not be parsed as Debezium change events, kept byte for byte with their
-- Kafka coordinates and the reason (from <entity>_message_error), so nothing is silently lost
-- and, once the cause is fixed, `hrdv dead-letters replay` sends them through parsing again: the
-- ones that now parse are deleted here (hrdv.dead_letter_replays keeps the record), the others
-- come back with their current reason. Shared by all entities: topic tells them apart.
--
-- ReplacingMergeTree ordered by the Kafka coordinates: a redelivered (or replayed) bad message
-- replaces its earlier copy instead of inflating the count; it then counts in the window of its
-- latest arrival. Monthly partitions make clean-up a DROP PARTITION;
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
