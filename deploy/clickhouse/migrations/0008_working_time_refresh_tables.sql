-- The tables of the working-time refresh that ClickHouse runs itself (the refreshable
-- view is in 0009; README "Working time"). It replaces the scratch tables of the
-- refresh that `serve` used to run.
DROP TABLE IF EXISTS `cvat`.working_time_stage_users;

DROP TABLE IF EXISTS `cvat`.working_time_stage;

-- The cost of a refresh is reported by system.view_refreshes.
ALTER TABLE `cvat`.working_time_refresh_log DROP COLUMN IF EXISTS elapsed_ms, DROP COLUMN IF EXISTS events;

-- What one refresh writes, in one INSERT: `total` rows (new-minus-stored deltas),
-- `checkpoint` rows, and one `run` row (the log). Null: nothing is kept here; the
-- views below route each kind to its table.
CREATE TABLE IF NOT EXISTS `cvat`.working_time_apply
(
    kind Enum8('total' = 1, 'checkpoint' = 2, 'run' = 3),
    user_id UInt64,
    hour DateTime('Etc/UTC'),
    project_id Nullable(UInt64),
    task_id Nullable(UInt64),
    job_id Nullable(UInt64),
    working_time_ms Int64,
    run_end_ms Int64,
    version UInt64,
    watermark DateTime64(6, 'Etc/UTC'),
    rule String,
    full UInt8,
    users UInt64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.working_time_apply_totals TO `cvat`.working_time_totals AS
SELECT user_id, hour, project_id, task_id, job_id, working_time_ms
FROM `cvat`.working_time_apply
WHERE kind = 'total';

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.working_time_apply_checkpoints TO `cvat`.working_time_checkpoints AS
SELECT user_id, hour, run_end_ms, job_id AS last_job_id, task_id AS last_task_id,
       project_id AS last_project_id, version
FROM `cvat`.working_time_apply
WHERE kind = 'checkpoint';

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.working_time_apply_log TO `cvat`.working_time_refresh_log AS
SELECT now64(6, 'UTC') AS refreshed_at, watermark, rule, full, users
FROM `cvat`.working_time_apply
WHERE kind = 'run';
