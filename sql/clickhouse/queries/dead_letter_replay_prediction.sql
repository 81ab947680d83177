-- What a replay would do, without doing it (--dry-run): the selected dead letters
-- (dead_letter_replay_outcomes.sql, filled in below) by previous reason, outcome and current reason.
SELECT previous_reason, outcome, reason, count() AS messages
FROM
(
${outcomes}
)
GROUP BY previous_reason, outcome, reason
ORDER BY outcome, messages DESC, previous_reason, reason
