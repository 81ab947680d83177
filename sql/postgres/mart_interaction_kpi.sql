-- Recomputes mart.interaction_kpi for the reporting windows starting at %(window_starts)s (a list:
-- one window, a range, or windows far apart; each window is read through the staging indexes on
-- created_at and closed_at, so the cost grows with the number of windows, not their spread).
-- Opened counts interactions by creation time; closed, resolution times and first-contact
-- resolution count interactions by closing time. Deleted interactions count nowhere; abandoned
-- ones (never answered, never closed: closed_at stays NULL) count as opened only.
DELETE FROM mart.interaction_kpi
WHERE window_start = ANY (%(window_starts)s::timestamptz[]);

WITH windows AS (
    SELECT unnest(%(window_starts)s::timestamptz[]) AS window_start
),
opened AS (
    SELECT
        w.window_start,
        i.channel_code,
        i.region_code,
        count(*) AS opened
    FROM windows AS w
    JOIN staging.interactions AS i
      ON i.created_at >= w.window_start AND i.created_at < w.window_start + %(window)s
    WHERE NOT i.is_deleted
    GROUP BY 1, 2, 3
),
closed AS (
    SELECT
        w.window_start,
        i.channel_code,
        i.region_code,
        count(*) AS closed,
        avg(extract(epoch FROM i.closed_at - i.created_at)) AS avg_resolution_s,
        percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM i.closed_at - i.created_at))
            AS p90_resolution_s,
        avg(CASE WHEN i.resolved_on_first_contact THEN 1.0 ELSE 0.0 END)
            AS first_contact_resolution_share
    FROM windows AS w
    JOIN staging.interactions AS i
      ON i.closed_at >= w.window_start AND i.closed_at < w.window_start + %(window)s
    WHERE NOT i.is_deleted
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
