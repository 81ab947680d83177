-- Dead letters of one topic received in [window_start, window_end), by reporting window and
-- reason. A bad message has no trustworthy commit time, so it counts in the window in which
-- ClickHouse received it. FINAL: a redelivered bad message is one dead letter, not two.
-- Windows are `window_minutes` long and aligned on the hour (as the reporting windows are).
SELECT
    toStartOfInterval(received_at, toIntervalMinute(%(window_minutes)s)) AS window_start,
    reason,
    count() AS messages
FROM hrdv.dead_letters FINAL
WHERE topic = %(topic)s
  AND received_at >= %(window_start)s AND received_at < %(window_end)s
GROUP BY window_start, reason
ORDER BY window_start, reason
