-- Dead letters of the given topics received in [window_start, window_end), by topic, reporting
-- window and reason. A bad message has no trustworthy commit time, so it counts in the window in
-- which ClickHouse received it. FINAL: a redelivered bad message is one dead letter, not two.
-- Windows are `window_minutes` long and aligned on the hour (as the reporting windows are).
SELECT
    topic,
    toStartOfInterval(received_at, toIntervalMinute(%(window_minutes)s)) AS window_start,
    reason,
    count() AS messages
FROM hrdv.dead_letters FINAL
WHERE has(%(topics)s, topic)
  AND received_at >= %(window_start)s AND received_at < %(window_end)s
GROUP BY topic, window_start, reason
ORDER BY topic, window_start, reason
