-- Deletes from hrdv.dead_letters the messages that one replay sent to the buffer: they no longer
-- count as dead letters; hrdv.dead_letter_replays keeps their record.
DELETE FROM hrdv.dead_letters
WHERE received_at < {started:DateTime64(3, 'UTC')}
  AND (topic, `partition`, `offset`) IN (
      SELECT topic, `partition`, `offset`
      FROM hrdv.dead_letter_replays
      WHERE replay_id = {replay_id:UUID} AND outcome = 'parsed'
  )
