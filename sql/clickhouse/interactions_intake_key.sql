-- The Kafka key (_key, '' for a null key) of every message, for dbz_key_error; intakes created
-- before the key was checked get it here. Null engine: nothing stored, nothing to fill.
ALTER TABLE hrdv.interactions_intake ADD COLUMN IF NOT EXISTS _key String AFTER message
