-- Why a message of the interactions topic (with its Kafka key) cannot go to hrdv.interactions_buffer: the envelope's
-- reason (dbz_envelope_error), else its row's (interactions_row_error on `image`, which is
-- dbz_row_image(message)), else ''. The one rule: hrdv.interactions_checked_mv applies it to
-- every message (the buffer view keeps '', the dead-letter view the rest), and
-- `hrdv dead-letters replay --dry-run` predicts with it.
--
-- The image is an argument, not computed here, because the row checks run lazily (only for a
-- valid envelope), and ClickHouse recomputes an expression inside a lazy branch at every use:
-- computed once as a column by the caller, it costs one parse instead of nineteen.
CREATE OR REPLACE FUNCTION interactions_message_error AS (message, key, image) -> if(
    dbz_envelope_error(message, key, image, 'interactions', ['id']) != '',
    dbz_envelope_error(message, key, image, 'interactions', ['id']),
    interactions_row_error(image)
)
