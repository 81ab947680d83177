-- What `hrdv dead-letters list` shows: the dead letters (FINAL: one per Kafka coordinate) by topic
-- and reason, with when the oldest and newest arrived and the start of the earliest one's raw
-- message (bytes that are not UTF-8 shown as U+FFFD).
SELECT
    topic,
    reason,
    count()                                                        AS messages,
    min(received_at)                                               AS oldest,
    max(received_at)                                               AS newest,
    argMin(`partition`, (received_at, `offset`))                   AS sample_partition,
    argMin(`offset`, (received_at, `offset`))                      AS sample_offset,
    toValidUTF8(substring(argMin(raw_message, (received_at, `offset`)), 1, %(sample_bytes)s))
                                                                   AS sample
FROM hrdv.dead_letters FINAL
GROUP BY topic, reason
ORDER BY topic, messages DESC, reason
