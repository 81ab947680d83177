-- The latest version (highest LSN) of every interaction changed, by PostgreSQL commit time, in
-- [window_start, window_end). LIMIT 1 BY rather than argMax: argMax skips NULL arguments, which
-- would resurrect a value the CRM has just cleared. Deletes come through as is_deleted = 1.
--
-- Unchanged TOAST values. The CRM's tables keep REPLICA IDENTITY DEFAULT (FULL would log the
-- whole old row, detoasted, on every update: 40 KB of WAL instead of 0.3 KB for an interaction
-- with a 40 KB subject). So an UPDATE that leaves a large, TOASTed text untouched arrives with
-- Debezium's placeholder (parameter `unavailable`: unavailable.value.placeholder in
-- stack/debezium-crm.json) instead of the text. The change that last set that text carried it in
-- full, and the buffer keeps every change, so a placeholder is replaced by the column's newest
-- real value at a lower LSN of the same id. Only ids whose latest version holds a placeholder
-- are looked up, through the buffer's primary key. A placeholder with nothing to replace it
-- (its origin dropped from the buffer) stays, and the staging upsert keeps the staged value.
WITH
    latest AS (
        SELECT
            id, customer_id, channel_code, region_code, topic_code, queue_code, direction, status,
            operator_id, subject, channel_detail, created_at, first_response_at, closed_at,
            resolved_on_first_contact, updated_at, is_deleted, lsn, committed_at
        FROM hrdv.interactions_buffer
        WHERE committed_at >= %(window_start)s AND committed_at < %(window_end)s
        ORDER BY id, lsn DESC
        LIMIT 1 BY id
    ),
    toasted AS (
        SELECT id, lsn
        FROM latest
        WHERE subject = %(unavailable)s OR channel_detail = %(unavailable)s
    ),
    earlier_values AS (
        SELECT
            b.id AS id,
            argMaxIf(b.subject, b.lsn, b.subject != %(unavailable)s) AS subject,
            argMaxIf(b.channel_detail, b.lsn, b.channel_detail != %(unavailable)s) AS channel_detail
        FROM hrdv.interactions_buffer AS b
        INNER JOIN toasted AS t ON b.id = t.id
        WHERE b.id IN (SELECT id FROM toasted) AND b.lsn < t.lsn
        GROUP BY b.id
    )
SELECT
    l.id AS id, customer_id, channel_code, region_code, topic_code, queue_code, direction, status,
    operator_id,
    if(l.subject = %(unavailable)s, coalesce(e.subject, l.subject), l.subject) AS subject,
    if(l.channel_detail = %(unavailable)s, coalesce(e.channel_detail, l.channel_detail),
       l.channel_detail) AS channel_detail,
    created_at, first_response_at, closed_at, resolved_on_first_contact, updated_at, is_deleted,
    lsn, committed_at
FROM latest AS l
LEFT JOIN earlier_values AS e ON l.id = e.id
