-- reapply: on-change
-- The productivity state (docs/productivity.md, "Kept by the engine"): objects per user and
-- day, review figures per job, each user's name per day, and the log of the runs that keep
-- them (queries/productivity_state.jinja). The refreshable view was made here until it kept
-- per-slot rows (0027): a store migrated before applies this again (its text changed), which
-- drops that view before 0027 changes what it writes.
DROP VIEW IF EXISTS `cvat`.productivity_refresh;

CREATE TABLE IF NOT EXISTS `cvat`.productivity_objects
(
    user_id UInt64,
    day Date,
    scope LowCardinality(String),
    obj_name Nullable(String),
    org_id Nullable(UInt64),
    project_id Nullable(UInt64),
    task_id Nullable(UInt64),
    job_id Nullable(UInt64),
    objects Int64,
    track_shapes Int64
,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (user_id, day, scope, obj_name, job_id, task_id, project_id, org_id)
SETTINGS allow_nullable_key = 1;

CREATE TABLE IF NOT EXISTS `cvat`.productivity_jobs
(
    job_id UInt64,
    org_id Nullable(UInt64),
    project_id Nullable(UInt64),
    task_id Nullable(UInt64),
    rejections UInt64,
    annotation_ms Int64,
    validation_ms Int64,
    acceptance_ms Int64,
    current_stage Nullable(String),
    current_since_ms Nullable(Int64),
    annotation_to_acceptance_ms Nullable(Int64),
    decided_ms Nullable(Int64),
    first_pass Nullable(UInt8),
    reviewer Nullable(UInt64),
    annotator Nullable(UInt64),
    days Array(Date)
,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY job_id;

-- Per user, day and organisation, the latest user_name their events carry (argMax states: a run that takes
-- an event again changes nothing, so each run folds in only the events new to it).
CREATE TABLE IF NOT EXISTS `cvat`.productivity_user_names
(
    user_id UInt64,
    day Date,
    org_id Nullable(UInt64),
    last_name AggregateFunction(argMax, String, DateTime64(3, 'Etc/UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (user_id, day, org_id)
SETTINGS allow_nullable_key = 1;

-- A row per run: the events inserted up to `watermark` are in the state.
CREATE TABLE IF NOT EXISTS `cvat`.productivity_refresh_log
(
    refreshed_at DateTime64(6, 'UTC'),
    watermark DateTime64(6, 'UTC'),
    full UInt8,
    changed_days UInt64,
    changed_jobs UInt64
)
ENGINE = MergeTree
ORDER BY watermark
TTL toDateTime(refreshed_at) + INTERVAL 30 DAY;
