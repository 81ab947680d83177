-- The Kafka key of each dead letter ('' for a null key), kept so that a replay sends the message
-- through the key check again. Dead letters stored before the key was kept have '' and so replay
-- as 'no key'.
ALTER TABLE hrdv.dead_letters ADD COLUMN IF NOT EXISTS raw_key String DEFAULT '' AFTER raw_message
