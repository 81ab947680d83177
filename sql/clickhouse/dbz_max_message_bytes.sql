-- Messages longer than this many bytes are dead letters ('oversized', dbz_envelope_error) and are
-- never parsed (dbz_row_image). ${max_message_bytes} comes from hrdv.clickhouse.apply_schema
-- (HRDV_MAX_MESSAGE_BYTES, default 1 MiB): Kafka's own default cap on a message
-- (message.max.bytes, and Connect's producer max.request.size). A CRM row event is about 1 KB,
-- so anything larger comes from a misconfigured producer or a runaway text column, and parsing
-- it would only cost memory in the ingest path.
CREATE OR REPLACE FUNCTION dbz_max_message_bytes AS () -> ${max_message_bytes}
