-- The mart's totals next to the staging rows they come from, for [%(range_start)s, %(range_end)s).
SELECT
    (SELECT coalesce(sum(opened), 0) FROM mart.interaction_kpi
      WHERE window_start >= %(range_start)s AND window_start < %(range_end)s) AS mart_opened,
    (SELECT count(*) FROM staging.interactions
      WHERE NOT is_deleted AND created_at >= %(range_start)s AND created_at < %(range_end)s)
        AS staging_opened,
    (SELECT coalesce(sum(closed), 0) FROM mart.interaction_kpi
      WHERE window_start >= %(range_start)s AND window_start < %(range_end)s) AS mart_closed,
    (SELECT count(*) FROM staging.interactions
      WHERE NOT is_deleted AND closed_at >= %(range_start)s AND closed_at < %(range_end)s)
        AS staging_closed;
