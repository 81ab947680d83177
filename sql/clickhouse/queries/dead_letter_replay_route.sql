-- Sends the messages of one replay (hrdv.dead_letter_replays) into the entity's intake with their
-- original Kafka coordinates: from there the usual views route each to the buffer or back to
-- hrdv.dead_letters. Only copies received before the replay started are read.
INSERT INTO hrdv.${entity}_intake (message, _key, _topic, _partition, _offset, _timestamp)
SELECT raw_message, raw_key, topic, `partition`, `offset`, kafka_timestamp
FROM hrdv.dead_letters FINAL
WHERE received_at < {started:DateTime64(3, 'UTC')}
  AND (topic, `partition`, `offset`) IN (
      SELECT topic, `partition`, `offset`
      FROM hrdv.dead_letter_replays
      WHERE replay_id = {replay_id:UUID}
  )
