-- Messages of one replay whose fate differs from its record: 'parsed' ones that came back to
-- hrdv.dead_letters, 'still failing' ones that did not come back with the recorded reason.
-- Zero unless the rules changed while the replay ran.
SELECT count()
FROM hrdv.dead_letter_replays AS r
LEFT JOIN
(
    SELECT topic, `partition`, `offset`, reason, 1 AS came_back
    FROM hrdv.dead_letters FINAL
    WHERE received_at >= {started:DateTime64(3, 'UTC')}
) AS d USING (topic, `partition`, `offset`)
WHERE r.replay_id = {replay_id:UUID}
  AND if(r.outcome = 'parsed', d.came_back = 1, d.came_back = 0 OR d.reason != r.reason)
