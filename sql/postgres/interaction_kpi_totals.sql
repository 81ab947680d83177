-- Per window starting at %(window_starts)s: the mart's opened and closed totals next to the
-- staging rows they come from.
WITH windows AS (
    SELECT unnest(%(window_starts)s::timestamptz[]) AS window_start
)
SELECT
    w.window_start,
    (SELECT coalesce(sum(opened), 0) FROM mart.interaction_kpi AS m
      WHERE m.window_start = w.window_start) AS mart_opened,
    (SELECT count(*) FROM staging.interactions AS i
      WHERE NOT i.is_deleted
        AND i.created_at >= w.window_start AND i.created_at < w.window_start + %(window)s)
        AS staging_opened,
    (SELECT coalesce(sum(closed), 0) FROM mart.interaction_kpi AS m
      WHERE m.window_start = w.window_start) AS mart_closed,
    (SELECT count(*) FROM staging.interactions AS i
      WHERE NOT i.is_deleted
        AND i.closed_at >= w.window_start AND i.closed_at < w.window_start + %(window)s)
        AS staging_closed
FROM windows AS w
ORDER BY w.window_start;
