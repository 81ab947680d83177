-- What one replay did: messages by previous reason, outcome and current reason.
SELECT previous_reason, outcome, reason, count() AS messages
FROM hrdv.dead_letter_replays
WHERE replay_id = {replay_id:UUID}
GROUP BY previous_reason, outcome, reason
ORDER BY outcome, messages DESC, previous_reason, reason
