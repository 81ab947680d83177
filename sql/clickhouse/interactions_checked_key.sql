-- The Kafka key of every checked message (see interactions_intake_key.sql).
ALTER TABLE hrdv.interactions_checked ADD COLUMN IF NOT EXISTS _key String AFTER message
