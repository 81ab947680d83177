-- Evidence of every dead-letter replay (`hrdv dead-letters replay`): one row per replayed
-- message with its Kafka coordinates, the reason it had, and the outcome. 'parsed' messages went
-- to their buffer and were deleted from hrdv.dead_letters (this row is what remains of them
-- there); 'still failing' ones went back to hrdv.dead_letters with `reason`, the current one.
-- Append-only and never collapsed: two replays of one message are two rows.
CREATE TABLE IF NOT EXISTS hrdv.dead_letter_replays
(
    replay_id       UUID,
    replayed_at     DateTime64(3, 'UTC'),
    topic           LowCardinality(String),
    `partition`     UInt64,
    `offset`        UInt64,
    previous_reason LowCardinality(String),
    outcome         LowCardinality(String),   -- 'parsed' or 'still failing'
    reason          LowCardinality(String)    -- the reason now; '' when parsed
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(replayed_at)
ORDER BY (replayed_at, topic, `partition`, `offset`)
