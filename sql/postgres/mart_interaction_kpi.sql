-- Recomputes mart.interaction_kpi for the reporting windows in [%(range_start)s, %(range_end)s).
-- Opened counts interactions by creation time; closed, resolution times and first-contact
-- resolution count interactions by closing time. Deleted interactions count nowhere.
DELETE FROM mart.interaction_kpi
WHERE window_start >= %(range_start)s AND window_start < %(range_end)s;

WITH live AS (
    SELECT *
    FROM staging.interactions
    WHERE NOT is_deleted
),
opened AS (
    SELECT
        date_bin(%(window)s, created_at, %(origin)s) AS window_start,
        channel_code,
        region_code,
        count(*) AS opened
    FROM live
    WHERE created_at >= %(range_start)s AND created_at < %(range_end)s
    GROUP BY 1, 2, 3
),
closed AS (
    SELECT
        date_bin(%(window)s, closed_at, %(origin)s) AS window_start,
        channel_code,
        region_code,
        count(*) AS closed,
        avg(extract(epoch FROM closed_at - created_at)) AS avg_resolution_s,
        percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM closed_at - created_at))
            AS p90_resolution_s,
        avg(CASE WHEN resolved_on_first_contact THEN 1.0 ELSE 0.0 END)
            AS first_contact_resolution_share
    FROM live
    WHERE closed_at >= %(range_start)s AND closed_at < %(range_end)s
    GROUP BY 1, 2, 3
)
INSERT INTO mart.interaction_kpi (
    window_start, window_end, channel_code, region_code, opened, closed,
    avg_resolution_s, p90_resolution_s, first_contact_resolution_share
)
SELECT
    window_start,
    window_start + %(window)s,
    channel_code,
    region_code,
    coalesce(opened.opened, 0),
    coalesce(closed.closed, 0),
    closed.avg_resolution_s,
    closed.p90_resolution_s,
    closed.first_contact_resolution_share
FROM opened
FULL JOIN closed USING (window_start, channel_code, region_code);
