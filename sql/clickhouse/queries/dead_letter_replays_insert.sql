-- Records one replay in hrdv.dead_letter_replays before its messages are sent through parsing:
-- the selected dead letters (dead_letter_replay_outcomes.sql, filled in below) with the outcome the
-- rule gives. This record is also the batch that the next statements route and clean up.
INSERT INTO hrdv.dead_letter_replays
    (replay_id, replayed_at, topic, `partition`, `offset`, previous_reason, outcome, reason)
SELECT
    {replay_id:UUID},
    {started:DateTime64(3, 'UTC')},
    topic,
    `partition`,
    `offset`,
    previous_reason,
    outcome,
    reason
FROM
(
${outcomes}
)
