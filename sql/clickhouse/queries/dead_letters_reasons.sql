-- The reasons the dead letters of the chosen topics have, with how many: what `hrdv dead-letters`
-- names when a --reason matches none, and the total a listing is a part of.
SELECT reason, count() AS messages
FROM hrdv.dead_letters FINAL
WHERE topic IN {topics:Array(String)}
  AND received_at >= {since:DateTime64(3, 'UTC')}
GROUP BY reason
ORDER BY messages DESC, reason
