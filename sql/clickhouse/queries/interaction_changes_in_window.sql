-- The latest version (highest LSN) of every interaction changed, by PostgreSQL commit time, in
-- [window_start, window_end). LIMIT 1 BY rather than argMax: argMax skips NULL arguments, which
-- would resurrect a value the CRM has just cleared. Deletes come through as is_deleted = 1.
SELECT
    id, customer_id, channel_code, region_code, topic_code, queue_code, direction, status,
    operator_id, subject, channel_detail, created_at, first_response_at, closed_at,
    resolved_on_first_contact, updated_at, is_deleted, lsn, committed_at
FROM hrdv.interactions_buffer
WHERE committed_at >= %(window_start)s AND committed_at < %(window_end)s
ORDER BY id, lsn DESC
LIMIT 1 BY id
