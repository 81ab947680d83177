-- Earlier reporting windows whose KPIs the changes in tmp_interactions_changes alter: a change
-- (a delete, a reopening, a correction, a commit landing after its business time's window) to a
-- row whose old or new creation or closing time lies before %(range_start)s. Run before the
-- upsert, while staging still holds the old values. Those windows' marts are stale until they are
-- materialised again.
WITH changed AS (
    -- A delete's row image holds placeholders (0, '', 1970-01-01) in its non-key columns:
    -- only its key is real, so it contributes the old times alone.
    SELECT s.created_at AS old_created, s.closed_at AS old_closed,
           CASE WHEN NOT t.is_deleted THEN t.created_at END AS new_created,
           CASE WHEN NOT t.is_deleted THEN t.closed_at END AS new_closed
    FROM tmp_interactions_changes AS t
    LEFT JOIN staging.interactions AS s USING (id)
    WHERE s.id IS NULL
       OR s.lsn < t.lsn AND (
              t.is_deleted <> s.is_deleted
           OR (NOT t.is_deleted AND (
                  t.created_at IS DISTINCT FROM s.created_at
               OR t.closed_at IS DISTINCT FROM s.closed_at
               OR t.channel_code IS DISTINCT FROM s.channel_code
               OR t.region_code IS DISTINCT FROM s.region_code
               OR t.resolved_on_first_contact IS DISTINCT FROM s.resolved_on_first_contact)))
),
moments AS (
    SELECT unnest(ARRAY[old_created, old_closed, new_created, new_closed]) AS moment FROM changed
)
SELECT DISTINCT date_bin(%(window)s, moment, %(origin)s) AS window_start
FROM moments
WHERE moment < %(range_start)s
ORDER BY 1;
