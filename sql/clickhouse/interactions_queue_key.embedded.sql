-- The embedded queue copies the intake's columns when created; one created before the Kafka key was
-- checked gets _key here (the Kafka-engine queue has it as a virtual column).
ALTER TABLE hrdv.interactions_queue ADD COLUMN IF NOT EXISTS _key String AFTER message
