-- Dead letters of one topic received in [window_start, window_end), by reason. A bad message has
-- no trustworthy commit time, so it counts in the window in which ClickHouse received it.
-- FINAL: a redelivered bad message is one dead letter, not two.
SELECT reason, count() AS messages
FROM hrdv.dead_letters FINAL
WHERE topic = %(topic)s
  AND received_at >= %(window_start)s AND received_at < %(window_end)s
GROUP BY reason
ORDER BY reason
