-- Type check of an interactions row image (dbz_row_image): '' if every column holds JSON null
-- (or is absent: a column the CRM has not added yet) or a value of its column's type, else
-- 'wrong type: <column>' for the first one that does not. Without it JSONExtract would turn a
-- wrong value into NULL, or convert it (1.5 -> 1, 123 -> '123', "12" -> 12), silently.
-- Integers must be JSON integers in range, text JSON strings, booleans JSON true/false,
-- timestamps parseable strings (dbz_is_timestamp). id is checked by dbz_envelope_error.
-- A new CRM column is one line here and one in hrdv.interactions_buffer_mv.
CREATE OR REPLACE FUNCTION interactions_row_error AS (image) -> multiIf(
    JSONType(image, 'customer_id') NOT IN ('Null', 'Int64'), 'wrong type: customer_id',
    JSONType(image, 'channel_code') NOT IN ('Null', 'String'), 'wrong type: channel_code',
    JSONType(image, 'region_code') NOT IN ('Null', 'String'), 'wrong type: region_code',
    JSONType(image, 'topic_code') NOT IN ('Null', 'String'), 'wrong type: topic_code',
    JSONType(image, 'queue_code') NOT IN ('Null', 'String'), 'wrong type: queue_code',
    JSONType(image, 'direction') NOT IN ('Null', 'String'), 'wrong type: direction',
    JSONType(image, 'status') NOT IN ('Null', 'String'), 'wrong type: status',
    NOT (JSONType(image, 'operator_id') = 'Null'
         OR JSONType(image, 'operator_id') = 'Int64'
            AND JSONExtractInt(image, 'operator_id') BETWEEN -2147483648 AND 2147483647),
        'wrong type: operator_id',
    JSONType(image, 'subject') NOT IN ('Null', 'String'), 'wrong type: subject',
    JSONType(image, 'channel_detail') NOT IN ('Null', 'String'), 'wrong type: channel_detail',
    NOT dbz_is_timestamp(image, 'created_at'), 'wrong type: created_at',
    NOT dbz_is_timestamp(image, 'first_response_at'), 'wrong type: first_response_at',
    NOT dbz_is_timestamp(image, 'closed_at'), 'wrong type: closed_at',
    NOT dbz_is_timestamp(image, 'updated_at'), 'wrong type: updated_at',
    JSONType(image, 'resolved_on_first_contact') NOT IN ('Null', 'Bool'),
        'wrong type: resolved_on_first_contact',
    ''
)
