-- What `hrdv dead-letters list` shows: the dead letters (FINAL: one per Kafka coordinate) of the
-- chosen topics, reason ('' = any) and arrival (at or after `since`), newest first, each with its
-- size, key and the start of its raw message as valid UTF-8 (other bytes shown as U+FFFD).
SELECT
    received_at,
    topic,
    `partition`,
    `offset`,
    reason,
    length(raw_message)                                                  AS bytes,
    toValidUTF8(raw_key)                                                 AS message_key,
    toValidUTF8(substring(raw_message, 1, {preview_bytes:UInt32}))       AS preview
FROM hrdv.dead_letters FINAL
WHERE topic IN {topics:Array(String)}
  AND ({reason:String} = '' OR reason = {reason:String})
  AND received_at >= {since:DateTime64(3, 'UTC')}
ORDER BY received_at DESC, topic, `partition`, `offset`
LIMIT {limit:UInt32}
