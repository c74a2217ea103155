-- Working time, kept current (docs/architecture.md and README, "Working time").
-- working_time_totals: per user, hour and credited (project, task, job), the ms of
-- working time counted at events in that hour. Rows are deltas: always read it as
-- sum(working_time_ms) ... GROUP BY (parts merge into one row per key over time).
-- The refreshable view working_time_refresh (migration 0009) keeps it exact.
CREATE TABLE IF NOT EXISTS `cvat`.working_time_totals
(
    user_id UInt64,
    hour DateTime('Etc/UTC'),
    project_id Nullable(UInt64),
    task_id Nullable(UInt64),
    job_id Nullable(UInt64),
    working_time_ms Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (user_id, hour, project_id, task_id, job_id)
SETTINGS allow_nullable_key = 1;

-- Per user and hour with events: the running end (prev_end) after the hour's last
-- event and that event's ids. A recompute that starts at an hour carries the state
-- over from the checkpoint before it, instead of re-reading the user's history.
CREATE TABLE IF NOT EXISTS `cvat`.working_time_checkpoints
(
    user_id UInt64,
    hour DateTime('Etc/UTC'),
    run_end_ms Int64,
    last_job_id Nullable(UInt64),
    last_task_id Nullable(UInt64),
    last_project_id Nullable(UInt64),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (user_id, hour);

-- Which users got client events, from which timestamp, and when they were inserted:
-- filled by the insert trigger below, read by `refresh` to know what to recompute.
CREATE TABLE IF NOT EXISTS `cvat`.working_time_changes
(
    user_id UInt64,
    min_ts DateTime64(3, 'Etc/UTC'),
    inserted_at DateTime64(6, 'Etc/UTC')
)
ENGINE = MergeTree
ORDER BY inserted_at
TTL toDateTime(inserted_at) + INTERVAL 7 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.working_time_changes_mv TO `cvat`.working_time_changes AS
SELECT assumeNotNull(user_id) AS user_id, min(timestamp) AS min_ts, now64(6) AS inserted_at
FROM `cvat`.events
WHERE source = 'client' AND user_id IS NOT NULL
GROUP BY user_id;

-- Scratch tables of one refresh (only one refresh runs at a time).
CREATE TABLE IF NOT EXISTS `cvat`.working_time_stage_users
(
    user_id UInt64,
    from_hour DateTime('Etc/UTC'),
    has_prev UInt8,
    c_end Int64,
    c_job Nullable(UInt64),
    c_task Nullable(UInt64),
    c_project Nullable(UInt64)
)
ENGINE = MergeTree
ORDER BY user_id;

CREATE TABLE IF NOT EXISTS `cvat`.working_time_stage
(
    user_id UInt64,
    hour DateTime('Etc/UTC'),
    rn UInt64,
    end_ms Int64,
    job_id Nullable(UInt64),
    task_id Nullable(UInt64),
    project_id Nullable(UInt64),
    working_time_ms Int64,
    credited_job_id Nullable(UInt64),
    credited_task_id Nullable(UInt64),
    credited_project_id Nullable(UInt64)
)
ENGINE = MergeTree
ORDER BY (user_id, hour);

-- One row per refresh: how far it got (watermark), under which rule, at what cost.
CREATE TABLE IF NOT EXISTS `cvat`.working_time_refresh_log
(
    refreshed_at DateTime64(6, 'Etc/UTC'),
    watermark DateTime64(6, 'Etc/UTC'),
    rule String,
    full UInt8,
    users UInt64,
    events UInt64,
    elapsed_ms UInt64
)
ENGINE = MergeTree
ORDER BY refreshed_at
TTL toDateTime(refreshed_at) + INTERVAL 30 DAY;
