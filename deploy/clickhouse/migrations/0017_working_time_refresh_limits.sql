-- reapply: on-change
-- The working-time refresh with its memory capped, a full recompute done a bucket of users
-- per run, and failures recorded and backed off (docs/working-time-and-sql.md, "The
-- refresh"; refresh_objects in queries/working_time.jinja). It holds the spec's rule,
-- interval and limits, so it is applied again when they change.
DROP VIEW IF EXISTS `cvat`.working_time_refresh;

-- A run row also says which bucket of a full recompute it did (-1: none, of full_buckets)
-- and, for a failure, the consecutive failures and the error.
ALTER TABLE `cvat`.working_time_apply
    ADD COLUMN IF NOT EXISTS full_bucket Int32,
    ADD COLUMN IF NOT EXISTS full_buckets UInt32,
    ADD COLUMN IF NOT EXISTS failures UInt32,
    ADD COLUMN IF NOT EXISTS error String;

ALTER TABLE `cvat`.working_time_refresh_log
    ADD COLUMN IF NOT EXISTS full_bucket Int32 DEFAULT -1,
    ADD COLUMN IF NOT EXISTS full_buckets UInt32,
    ADD COLUMN IF NOT EXISTS failures UInt32,
    ADD COLUMN IF NOT EXISTS error String;

DROP VIEW IF EXISTS `cvat`.working_time_apply_log;

CREATE MATERIALIZED VIEW `cvat`.working_time_apply_log TO `cvat`.working_time_refresh_log AS
SELECT now64(6, 'UTC') AS refreshed_at, watermark, rule, full, users, full_bucket, full_buckets, failures, error
FROM `cvat`.working_time_apply
WHERE kind = 'run'
