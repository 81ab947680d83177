-- Source-model change 001, as the real CRM changed mid-project (applied by hrdv.crm.migrate).
-- 1. interactions.channel_detail: the sub-channel the contact came through (ivr, callback,
--    telegram, mobile_app, ...). Nullable: rows written before the change have none.
-- 2. The interaction status 'in_progress' is renamed 'in_work'; rows already in that status are
--    updated, so after this one transaction no interaction says 'in_progress' any more.
--    (work_orders keep their own 'in_progress': that is a different status set.)
-- ADD COLUMN takes an ACCESS EXCLUSIVE lock on interactions for the whole transaction: writers
-- wait for it and then see both parts at once, never one without the other.
ALTER TABLE interactions ADD COLUMN IF NOT EXISTS channel_detail text;
UPDATE interactions SET status = 'in_work' WHERE status = 'in_progress';
