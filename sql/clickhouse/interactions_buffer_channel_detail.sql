-- interactions.channel_detail (CRM migration 001): the sub-channel of the contact. Added by
-- ALTER rather than in the CREATE TABLE so that buffers created before the migration get it on
-- the next apply_schema, like new ones; events written before the migration lack the field and
-- parse as NULL. The buffer view selects it, so this runs before the view is (re)created.
ALTER TABLE hrdv.interactions_buffer
    ADD COLUMN IF NOT EXISTS channel_detail Nullable(String) AFTER subject
