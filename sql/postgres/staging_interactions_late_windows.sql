-- Earlier reporting windows whose KPIs the changes in tmp_interactions_changes alter. Run before
-- the upsert, while staging still holds the old values. A window is listed only for a figure the
-- change really moves:
-- - opened (by created_at, channel, region) when the creation time, channel, region or the
--   deleted flag changed (or the row is new to staging): the old and the new creation window;
-- - closed, resolution times and first-contact share (by closed_at) when the closing time, the
--   creation time (resolution time), channel, region, first-contact flag or deleted flag changed:
--   the old and the new closing window.
-- A status change, a reassignment or a later update of an old row lists nothing; nor does an
-- abandonment (status and abandoned_at: the mart counts an abandoned contact as opened, by its
-- creation, and never as closed, its closed_at stays NULL) or a transfer (queue_code and
-- transfer_count: queues are not cells of this mart). Windows from %(range_start)s on are
-- recomputed by the run itself and are not listed.
WITH changed AS (
    -- A delete's row image holds placeholders (0, '', 1970-01-01) in its non-key columns:
    -- only its key is real, so it contributes the old times alone.
    SELECT
        -- A row already deleted in staging is in no window: its old times list nothing.
        CASE WHEN NOT s.is_deleted THEN s.created_at END AS old_created,
        CASE WHEN NOT s.is_deleted THEN s.closed_at END AS old_closed,
        CASE WHEN NOT t.is_deleted THEN t.created_at END AS new_created,
        CASE WHEN NOT t.is_deleted THEN t.closed_at END AS new_closed,
        s.id IS NULL
            OR t.is_deleted IS DISTINCT FROM s.is_deleted
            OR NOT t.is_deleted AND (
                   t.channel_code IS DISTINCT FROM s.channel_code
                OR t.region_code IS DISTINCT FROM s.region_code) AS moved,
        NOT t.is_deleted AND t.created_at IS DISTINCT FROM s.created_at AS created_changed,
        NOT t.is_deleted AND (
               t.closed_at IS DISTINCT FROM s.closed_at
            OR t.resolved_on_first_contact IS DISTINCT FROM s.resolved_on_first_contact)
            AS closing_changed
    FROM tmp_interactions_changes AS t
    LEFT JOIN staging.interactions AS s USING (id)
    WHERE s.id IS NULL OR s.lsn < t.lsn
),
moments AS (
    SELECT unnest(ARRAY[old_created, new_created]) AS moment
    FROM changed
    WHERE moved OR created_changed
    UNION ALL
    SELECT unnest(ARRAY[old_closed, new_closed])
    FROM changed
    WHERE moved OR created_changed OR closing_changed
)
SELECT DISTINCT date_bin(%(window)s, moment, %(origin)s) AS window_start
FROM moments
WHERE moment < %(range_start)s
ORDER BY 1;
