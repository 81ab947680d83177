-- Per reporting window of [window_start, window_end): what a run of that window alone stages from
-- hrdv.${entity}_buffer, so that each window of a range run gets its own figures. `changed` counts
-- the keys changed in the window (the window query's rows: latest version per key), `deletes` those
-- whose latest version in the window is a delete, and `statuses` the live ones by status.
-- `key` is the entity's key column and `status` its status column (NULL for an entity without
-- one). Windows are `window_minutes` long and aligned on the hour (as the reporting windows are).
SELECT
    window_start,
    count()                                  AS changed,
    countIf(is_deleted)                      AS deletes,
    sumMapIf(map(assumeNotNull(status), toUInt64(1)), NOT is_deleted AND status IS NOT NULL)
                                             AS statuses
FROM
(
    SELECT
        ${key},
        toStartOfInterval(committed_at, toIntervalMinute(%(window_minutes)s)) AS window_start,
        argMax(is_deleted, lsn)  AS is_deleted,
        argMax(${status}, lsn)   AS status
    FROM hrdv.${entity}_buffer
    WHERE committed_at >= %(window_start)s AND committed_at < %(window_end)s
    GROUP BY ${key}, window_start
)
GROUP BY window_start
ORDER BY window_start
