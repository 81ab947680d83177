-- Upserts the changes COPYed into tmp_interactions_changes into staging.interactions.
-- A row is only ever replaced by a newer change (higher LSN), so replays are harmless.
-- A TOAST placeholder the window query could not resolve (parameter `unavailable`: an update left a large
-- text untouched) keeps the staged text.
INSERT INTO staging.interactions AS s (
    id, customer_id, channel_code, region_code, topic_code, queue_code, direction, status,
    operator_id, subject, channel_detail, created_at, first_response_at, closed_at,
    resolved_on_first_contact, updated_at, is_deleted, lsn, committed_at
)
SELECT
    id, customer_id, channel_code, region_code, topic_code, queue_code, direction, status,
    operator_id, subject, channel_detail, created_at, first_response_at, closed_at,
    resolved_on_first_contact, updated_at, false, lsn, committed_at
FROM tmp_interactions_changes
WHERE NOT is_deleted
ON CONFLICT (id) DO UPDATE SET
    customer_id = EXCLUDED.customer_id,
    channel_code = EXCLUDED.channel_code,
    region_code = EXCLUDED.region_code,
    topic_code = EXCLUDED.topic_code,
    queue_code = EXCLUDED.queue_code,
    direction = EXCLUDED.direction,
    status = EXCLUDED.status,
    operator_id = EXCLUDED.operator_id,
    subject = CASE WHEN EXCLUDED.subject = %(unavailable)s THEN s.subject
                   ELSE EXCLUDED.subject END,
    channel_detail = CASE WHEN EXCLUDED.channel_detail = %(unavailable)s THEN s.channel_detail
                          ELSE EXCLUDED.channel_detail END,
    created_at = EXCLUDED.created_at,
    first_response_at = EXCLUDED.first_response_at,
    closed_at = EXCLUDED.closed_at,
    resolved_on_first_contact = EXCLUDED.resolved_on_first_contact,
    updated_at = EXCLUDED.updated_at,
    is_deleted = false,
    lsn = EXCLUDED.lsn,
    committed_at = EXCLUDED.committed_at,
    loaded_at = now()
WHERE s.lsn < EXCLUDED.lsn;

-- A delete's row image is real only in its key (the rest are Debezium's placeholders):
-- flag the row, keep its last known values.
INSERT INTO staging.interactions AS s (id, is_deleted, lsn, committed_at)
SELECT id, true, lsn, committed_at
FROM tmp_interactions_changes
WHERE is_deleted
ON CONFLICT (id) DO UPDATE SET
    is_deleted = true,
    lsn = EXCLUDED.lsn,
    committed_at = EXCLUDED.committed_at,
    loaded_at = now()
WHERE s.lsn < EXCLUDED.lsn;
