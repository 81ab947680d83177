-- Every message of hrdv.interactions_intake with its row image (dbz_row_image) and
-- `reason`, why it cannot go to hrdv.interactions_buffer ('' when it can), from
-- interactions_message_error. A Null-engine table: it stores nothing and only hands each block to
-- its two views, the buffer view (reason '') and the dead-letter view (the others). Checking
-- here, once, rather than in both views, and cutting out the image once for the checks and the
-- parse, keeps validation from dominating the cost of ingestion (bench_clickhouse_ingest).
CREATE TABLE IF NOT EXISTS hrdv.interactions_checked
(
    message    String,
    _key       String,
    _topic     LowCardinality(String),
    _partition UInt64,
    _offset    UInt64,
    _timestamp Nullable(DateTime),
    image      String,
    reason     LowCardinality(String)
)
ENGINE = Null
