-- The dead letters of one entity's topic that a replay selects, each with the reason it has, the
-- reason the entity's rule gives it now ('' = it would parse) and so its outcome ('parsed' or
-- 'still failing'): the same functions the check view applies (<entity>_message_error on
-- dbz_row_image), so this is what the views will do. The image is a column of the inner query so
-- that it is computed once per message (see interactions_message_error.sql). Filters: reason
-- ('' = any), received at or after `since`.
SELECT
    topic,
    `partition`,
    `offset`,
    previous_reason,
    ${entity}_message_error(raw_message, raw_key, image) AS reason,
    if(reason = '', 'parsed', 'still failing') AS outcome
FROM
(
    SELECT
        topic,
        `partition`,
        `offset`,
        reason                      AS previous_reason,
        raw_message,
        raw_key,
        dbz_row_image(raw_message, '${key}') AS image
    FROM hrdv.dead_letters FINAL
    WHERE topic = {topic:String}
      AND ({reason:String} = '' OR reason = {reason:String})
      AND received_at >= {since:DateTime64(3, 'UTC')}
      AND received_at < {started:DateTime64(3, 'UTC')}
)
