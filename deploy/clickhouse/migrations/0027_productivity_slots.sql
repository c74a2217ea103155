-- reapply: on-change
-- The productivity state per slot (working_time.refresh_slot_s): object figures per user and
-- slot, what a job's figures fold from per job and slot, and the refreshable view that keeps
-- them and the tables of 0026, so a run's cost follows the new events, not the day or the
-- job's age (docs/productivity.md, "Kept by the engine"; queries/productivity_state.jinja).
-- The first run after it (no run logged at the slot size) recomputes everything. It holds the
-- spec's interval, slot size and limits, so it is applied again when they change.
DROP VIEW IF EXISTS `cvat`.productivity_refresh;
DROP VIEW IF EXISTS `cvat`.productivity_apply_objects;
DROP VIEW IF EXISTS `cvat`.productivity_apply_jobs;
DROP VIEW IF EXISTS `cvat`.productivity_apply_names;
DROP VIEW IF EXISTS `cvat`.productivity_apply_log;
DROP VIEW IF EXISTS `cvat`.productivity_apply_object_slots;
DROP VIEW IF EXISTS `cvat`.productivity_apply_job_slots;
DROP VIEW IF EXISTS `cvat`.productivity_apply_job_hours;
DROP VIEW IF EXISTS `cvat`.productivity_apply_object_hours;
DROP TABLE IF EXISTS `cvat`.productivity_apply;

CREATE TABLE IF NOT EXISTS `cvat`.productivity_object_slots
(
    user_id UInt64,
    day Date,
    slot DateTime('Etc/UTC'),
    slot_s UInt32,
    scope LowCardinality(String),
    obj_name Nullable(String),
    org_id Nullable(UInt64),
    project_id Nullable(UInt64),
    task_id Nullable(UInt64),
    job_id Nullable(UInt64),
    objects Int64,
    track_shapes Int64
,
    version UInt64,
    -- a run folds the rows of the run before it, found by their version
    INDEX idx_version version TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (user_id, slot, slot_s, scope, obj_name, job_id, task_id, project_id, org_id)
SETTINGS allow_nullable_key = 1, index_granularity = 1024;

CREATE TABLE IF NOT EXISTS `cvat`.productivity_object_hours
(
    user_id UInt64,
    day Date,
    hour DateTime('Etc/UTC'),
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
ORDER BY (user_id, hour, scope, obj_name, job_id, task_id, project_id, org_id)
SETTINGS allow_nullable_key = 1, index_granularity = 1024;

CREATE TABLE IF NOT EXISTS `cvat`.productivity_job_slots
(
    job_id UInt64,
    slot DateTime('Etc/UTC'),
    slot_s UInt32,
    last_ms Int64,
    org_id Nullable(UInt64),
    project_id Nullable(UInt64),
    task_id Nullable(UInt64),
    rejections UInt64,
    first_annotation_ms Nullable(Int64),
    accepted_ms Nullable(Int64),
    created_ms Nullable(Int64),
    changes Array(Tuple(Int64, String, String)),
    first_decision Array(Tuple(Int64, UInt8, UInt64)),
    created_before Array(Tuple(UInt64, Int64)),
    days Array(Date)
,
    version UInt64,
    -- a run folds the rows of the run before it, found by their version
    INDEX idx_version version TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (job_id, slot, slot_s)
SETTINGS index_granularity = 1024;

CREATE TABLE IF NOT EXISTS `cvat`.productivity_job_hours
(
    job_id UInt64,
    hour DateTime('Etc/UTC'),
    last_ms Int64,
    org_id Nullable(UInt64),
    project_id Nullable(UInt64),
    task_id Nullable(UInt64),
    rejections UInt64,
    first_annotation_ms Nullable(Int64),
    accepted_ms Nullable(Int64),
    created_ms Nullable(Int64),
    changes Array(Tuple(Int64, String, String)),
    first_decision Array(Tuple(Int64, UInt8, UInt64)),
    created_before Array(Tuple(UInt64, Int64)),
    days Array(Date)
,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (job_id, hour)
SETTINGS index_granularity = 1024;

ALTER TABLE `cvat`.productivity_object_slots DELETE WHERE slot_s != 60;
ALTER TABLE `cvat`.productivity_job_slots DELETE WHERE slot_s != 60;
ALTER TABLE `cvat`.productivity_refresh_log ADD COLUMN IF NOT EXISTS slot_s UInt32;
ALTER TABLE `cvat`.productivity_refresh_log ADD COLUMN IF NOT EXISTS slots_watermark DateTime64(6, 'UTC');

CREATE TABLE `cvat`.productivity_apply
(
    kind Enum8('object' = 1, 'job' = 2, 'name' = 3, 'run' = 4, 'object_slot' = 5, 'job_slot' = 6, 'job_hour' = 7,
               'object_hour' = 8),
    version UInt64,
    user_id UInt64,
    day Date,
    slot DateTime('Etc/UTC'),
    slot_s UInt32,
    scope LowCardinality(String),
    obj_name Nullable(String),
    org_id Nullable(UInt64),
    project_id Nullable(UInt64),
    task_id Nullable(UInt64),
    job_id Nullable(UInt64),
    objects Int64,
    track_shapes Int64,
    hour DateTime('Etc/UTC'),
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
    days Array(Date),
    last_ms Int64,
    first_annotation_ms Nullable(Int64),
    accepted_ms Nullable(Int64),
    created_ms Nullable(Int64),
    changes Array(Tuple(Int64, String, String)),
    first_decision Array(Tuple(Int64, UInt8, UInt64)),
    created_before Array(Tuple(UInt64, Int64)),
    last_name AggregateFunction(argMax, String, DateTime64(3, 'Etc/UTC')),
    watermark DateTime64(6, 'UTC'),
    full UInt8,
    changed_days UInt64,
    changed_jobs UInt64,
    slots_watermark DateTime64(6, 'UTC')
)
ENGINE = Null;

CREATE MATERIALIZED VIEW `cvat`.productivity_apply_objects TO `cvat`.productivity_objects AS
SELECT user_id, day, scope, obj_name, org_id, project_id, task_id, job_id, objects, track_shapes, version
FROM `cvat`.productivity_apply
WHERE kind = 'object';

CREATE MATERIALIZED VIEW `cvat`.productivity_apply_jobs TO `cvat`.productivity_jobs AS
SELECT assumeNotNull(job_id) AS job_id, org_id, project_id, task_id, rejections, annotation_ms, validation_ms, acceptance_ms, current_stage, current_since_ms, annotation_to_acceptance_ms, decided_ms, first_pass, reviewer, annotator, days, version
FROM `cvat`.productivity_apply
WHERE kind = 'job';

CREATE MATERIALIZED VIEW `cvat`.productivity_apply_object_slots TO `cvat`.productivity_object_slots AS
SELECT user_id, day, slot, slot_s, scope, obj_name, org_id, project_id, task_id, job_id, objects, track_shapes, version
FROM `cvat`.productivity_apply
WHERE kind = 'object_slot';

CREATE MATERIALIZED VIEW `cvat`.productivity_apply_job_slots TO `cvat`.productivity_job_slots AS
SELECT assumeNotNull(job_id) AS job_id, slot, slot_s, last_ms, org_id, project_id, task_id, rejections, first_annotation_ms, accepted_ms, created_ms, changes, first_decision, created_before, days, version
FROM `cvat`.productivity_apply
WHERE kind = 'job_slot';

CREATE MATERIALIZED VIEW `cvat`.productivity_apply_job_hours TO `cvat`.productivity_job_hours AS
SELECT assumeNotNull(job_id) AS job_id, hour, last_ms, org_id, project_id, task_id, rejections, first_annotation_ms, accepted_ms, created_ms, changes, first_decision, created_before, days, version
FROM `cvat`.productivity_apply
WHERE kind = 'job_hour';

CREATE MATERIALIZED VIEW `cvat`.productivity_apply_object_hours TO `cvat`.productivity_object_hours AS
SELECT user_id, day, hour, scope, obj_name, org_id, project_id, task_id, job_id, objects, track_shapes, version
FROM `cvat`.productivity_apply
WHERE kind = 'object_hour';

CREATE MATERIALIZED VIEW `cvat`.productivity_apply_names TO `cvat`.productivity_user_names AS
SELECT user_id, day, org_id, last_name
FROM `cvat`.productivity_apply
WHERE kind = 'name';

CREATE MATERIALIZED VIEW `cvat`.productivity_apply_log TO `cvat`.productivity_refresh_log AS
SELECT now64(6, 'UTC') AS refreshed_at, watermark, full, changed_days, changed_jobs, slot_s, slots_watermark
FROM `cvat`.productivity_apply
WHERE kind = 'run';

-- refresh_retries = 0: a failed run is taken again by the next one (the watermark stays).
CREATE MATERIALIZED VIEW `cvat`.productivity_refresh
REFRESH EVERY 60 SECOND
SETTINGS refresh_retries = 0
APPEND TO `cvat`.productivity_apply AS
WITH
    (SELECT argMax((slots_watermark, watermark), slots_watermark) FROM `cvat`.productivity_refresh_log
     WHERE slot_s = 60) AS logged,
    -- no run logged at this slot size yet: recompute every slot. (Not named `full`: each
    -- branch below gives productivity_apply's `full` a value, and a name a subquery has no
    -- column of resolves to its enclosing SELECT's alias before the WITH's: seen on 26.9.)
    toUInt8(logged.1 = toDateTime64(0, 6, 'UTC')) AS full_run,
    now64(6, 'UTC') AS run_until,
    logged.1 - toIntervalSecond(60) AS run_since,
    ifNull((SELECT toUInt64OrZero(extract(comment, 'blocks up to ([0-9]+)')) FROM system.columns
            WHERE database = 'cvat' AND table = 'events'
              AND name = 'inserted_at'), 0) AS adopted_block,
    toUInt64(toUnixTimestamp64Micro(run_until)) AS version,
    -- the fold: the slot rows of the runs after the last fold's, up to the run before this one
    toUInt8(logged.2 = toDateTime64(0, 6, 'UTC')) AS full_fold,
    toUInt64(toUnixTimestamp64Micro(logged.2)) AS folded_version,
    toUInt64(toUnixTimestamp64Micro(logged.1)) AS fold_version,
    user_slots AS
    (
        SELECT DISTINCT user_id, slot
        FROM
        (
            SELECT assumeNotNull(user_id) AS user_id, toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60)) AS slot
            FROM `cvat`.events
            WHERE NOT full_run AND inserted_at > run_since AND inserted_at <= run_until
            AND (adopted_block = 0 OR (toUInt64(splitByChar('_', _part)[3]) > adopted_block AND _block_number > adopted_block)) AND source = 'server' AND user_id IS NOT NULL AND scope IN ('create:tags', 'create:shapes', 'create:tracks', 'update:tags', 'update:shapes', 'update:tracks', 'delete:tags', 'delete:shapes', 'delete:tracks')
            UNION ALL
            SELECT assumeNotNull(user_id) AS user_id, toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60)) AS slot
            FROM `cvat`.events
            WHERE full_run AND source = 'server' AND user_id IS NOT NULL AND scope IN ('create:tags', 'create:shapes', 'create:tracks', 'update:tags', 'update:shapes', 'update:tracks', 'delete:tags', 'delete:shapes', 'delete:tracks')
        )
    ),
    job_slots AS
    (
        SELECT DISTINCT job_id, slot
        FROM
        (
            SELECT assumeNotNull(job_id) AS job_id, toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60)) AS slot
            FROM `cvat`.events
            WHERE NOT full_run AND inserted_at > run_since AND inserted_at <= run_until
            AND (adopted_block = 0 OR (toUInt64(splitByChar('_', _part)[3]) > adopted_block AND _block_number > adopted_block)) AND source = 'server' AND job_id IS NOT NULL
            UNION ALL
            SELECT assumeNotNull(job_id) AS job_id, toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60)) AS slot
            FROM `cvat`.events
            WHERE full_run AND source = 'server' AND job_id IS NOT NULL
        )
    ),
    -- the hours of the slot rows to fold
    object_hours AS
    (
        SELECT DISTINCT user_id, toStartOfHour(slot) AS hour
        FROM `cvat`.productivity_object_slots
        WHERE slot_s = 60 AND version > folded_version AND version <= fold_version
    ),
    job_hours AS
    (
        SELECT DISTINCT job_id, toStartOfHour(slot) AS hour
        FROM `cvat`.productivity_job_slots
        WHERE slot_s = 60 AND version > folded_version AND version <= fold_version
    ),
    -- each of those hours from all its slots (a range of the slot tables' sort key)
    object_hour_rows AS
    (
        SELECT user_id, toStartOfHour(slot) AS hour, day, org_id, project_id, task_id, job_id, scope, obj_name,
               sum(objects) AS objects, sum(track_shapes) AS track_shapes
        FROM `cvat`.productivity_object_slots FINAL
        WHERE slot_s = 60 AND (user_id, toStartOfHour(slot)) IN object_hours
        GROUP BY user_id, hour, day, org_id, project_id, task_id, job_id, scope, obj_name
    ),
    job_hour_rows AS
    (
        SELECT job_id, m_slot AS slot, m_last_ms AS last_ms, m_org_id AS org_id, m_project_id AS project_id,
               m_task_id AS task_id, m_rejections AS rejections, m_first_annotation_ms AS first_annotation_ms,
               m_accepted_ms AS accepted_ms, m_created_ms AS created_ms, m_changes AS changes, m_first_decision AS first_decision,
               arrayZip((arrayReduce('sumMap', [arrayMap(c -> c.1, m_before)], [arrayMap(c -> c.2, m_before)],
                              [arrayMap(c -> toUInt64(1), m_before)]) AS m_summed).1, m_summed.2) AS created_before,
               m_days AS days
        FROM
        (
            SELECT job_id, toStartOfHour(slot) AS m_slot,           max(last_ms) AS m_last_ms, argMax(org_id, last_ms) AS m_org_id, argMax(project_id, last_ms) AS m_project_id,
                   argMax(task_id, last_ms) AS m_task_id, sum(rejections) AS m_rejections,
                   min(first_annotation_ms) AS m_first_annotation_ms, min(accepted_ms) AS m_accepted_ms,
                   min(created_ms) AS m_created_ms, groupArrayArray(changes) AS m_changes,
                   arraySlice(arraySort(groupArrayArray(first_decision)), 1, 1) AS m_first_decision,
                   arrayFlatten(arrayMap(s -> s.2, arrayFilter(s -> empty(m_first_decision) OR s.1 <= m_first_decision[1].1,
                       groupArray((toInt64(toUnixTimestamp(slot)) * 1000, created_before))))) AS m_before,
                   arraySort(groupUniqArrayArray(days)) AS m_days
            FROM (SELECT job_id, slot, last_ms, org_id, project_id, task_id, rejections, first_annotation_ms, accepted_ms, created_ms, changes, first_decision, created_before, days
                    FROM `cvat`.productivity_job_slots FINAL
                    WHERE slot_s = 60 AND (job_id, toStartOfHour(slot)) IN job_hours)
            GROUP BY job_id, m_slot)
    )
SELECT *
FROM
(
    -- the slots: each touched (user, slot) a range of the events' sort key
    SELECT 'object_slot' AS kind, version,
    CAST(user_id, 'UInt64') AS user_id,
    CAST(day, 'Date') AS day,
    CAST(slot, 'DateTime(\'Etc/UTC\')') AS slot,
    CAST(60, 'UInt32') AS slot_s,
    CAST(scope, 'LowCardinality(String)') AS scope,
    CAST(obj_name, 'Nullable(String)') AS obj_name,
    CAST(org_id, 'Nullable(UInt64)') AS org_id,
    CAST(project_id, 'Nullable(UInt64)') AS project_id,
    CAST(task_id, 'Nullable(UInt64)') AS task_id,
    CAST(job_id, 'Nullable(UInt64)') AS job_id,
    CAST(objects, 'Int64') AS objects,
    CAST(track_shapes, 'Int64') AS track_shapes,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS hour,
    defaultValueOfTypeName('UInt64') AS rejections,
    defaultValueOfTypeName('Int64') AS annotation_ms,
    defaultValueOfTypeName('Int64') AS validation_ms,
    defaultValueOfTypeName('Int64') AS acceptance_ms,
    defaultValueOfTypeName('Nullable(String)') AS current_stage,
    defaultValueOfTypeName('Nullable(Int64)') AS current_since_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS annotation_to_acceptance_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS decided_ms,
    defaultValueOfTypeName('Nullable(UInt8)') AS first_pass,
    defaultValueOfTypeName('Nullable(UInt64)') AS reviewer,
    defaultValueOfTypeName('Nullable(UInt64)') AS annotator,
    defaultValueOfTypeName('Array(Date)') AS days,
    defaultValueOfTypeName('Int64') AS last_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS first_annotation_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS accepted_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS created_ms,
    defaultValueOfTypeName('Array(Tuple(Int64, String, String))') AS changes,
    defaultValueOfTypeName('Array(Tuple(Int64, UInt8, UInt64))') AS first_decision,
    defaultValueOfTypeName('Array(Tuple(UInt64, Int64))') AS created_before,
    defaultValueOfTypeName('AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS watermark,
    defaultValueOfTypeName('UInt8') AS full,
    defaultValueOfTypeName('UInt64') AS changed_days,
    defaultValueOfTypeName('UInt64') AS changed_jobs,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS slots_watermark
    FROM
    (
        SELECT
            assumeNotNull(user_id) AS user_id, toDate(timestamp) AS day, toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60)) AS slot, org_id, project_id, task_id, job_id, scope, obj_name,
            toInt64(sum(ifNull(count, 0))) AS objects,
            toInt64(sum(if(endsWith(scope, ':tracks'),
                arraySum(arrayMap(t -> JSONExtractInt(t, 'visible_shapes_count_diff'), JSONExtractArrayRaw(ifNull(payload, ''), 'tracks'))),
                0))) AS track_shapes
        FROM `cvat`.events
        WHERE scope IN ('create:tags', 'create:shapes', 'create:tracks', 'update:tags', 'update:shapes', 'update:tracks', 'delete:tags', 'delete:shapes', 'delete:tracks') AND source = 'server' AND user_id IS NOT NULL
          AND (user_id, toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60))) IN user_slots
        GROUP BY user_id, day, slot, org_id, project_id, task_id, job_id, scope, obj_name
    )
    UNION ALL
    -- each touched (job, slot): the slot's events (the timestamp minmax index skips the rest
    -- of the store, the job_id one the slot's other jobs)
    SELECT 'job_slot' AS kind, version,
    defaultValueOfTypeName('UInt64') AS user_id,
    defaultValueOfTypeName('Date') AS day,
    CAST(slot, 'DateTime(\'Etc/UTC\')') AS slot,
    CAST(60, 'UInt32') AS slot_s,
    defaultValueOfTypeName('LowCardinality(String)') AS scope,
    defaultValueOfTypeName('Nullable(String)') AS obj_name,
    CAST(org_id, 'Nullable(UInt64)') AS org_id,
    CAST(project_id, 'Nullable(UInt64)') AS project_id,
    CAST(task_id, 'Nullable(UInt64)') AS task_id,
    CAST(job_id, 'Nullable(UInt64)') AS job_id,
    defaultValueOfTypeName('Int64') AS objects,
    defaultValueOfTypeName('Int64') AS track_shapes,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS hour,
    CAST(rejections, 'UInt64') AS rejections,
    defaultValueOfTypeName('Int64') AS annotation_ms,
    defaultValueOfTypeName('Int64') AS validation_ms,
    defaultValueOfTypeName('Int64') AS acceptance_ms,
    defaultValueOfTypeName('Nullable(String)') AS current_stage,
    defaultValueOfTypeName('Nullable(Int64)') AS current_since_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS annotation_to_acceptance_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS decided_ms,
    defaultValueOfTypeName('Nullable(UInt8)') AS first_pass,
    defaultValueOfTypeName('Nullable(UInt64)') AS reviewer,
    defaultValueOfTypeName('Nullable(UInt64)') AS annotator,
    CAST(days, 'Array(Date)') AS days,
    CAST(last_ms, 'Int64') AS last_ms,
    CAST(first_annotation_ms, 'Nullable(Int64)') AS first_annotation_ms,
    CAST(accepted_ms, 'Nullable(Int64)') AS accepted_ms,
    CAST(created_ms, 'Nullable(Int64)') AS created_ms,
    CAST(changes, 'Array(Tuple(Int64, String, String))') AS changes,
    CAST(first_decision, 'Array(Tuple(Int64, UInt8, UInt64))') AS first_decision,
    CAST(created_before, 'Array(Tuple(UInt64, Int64))') AS created_before,
    defaultValueOfTypeName('AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS watermark,
    defaultValueOfTypeName('UInt8') AS full,
    defaultValueOfTypeName('UInt64') AS changed_days,
    defaultValueOfTypeName('UInt64') AS changed_jobs,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS slots_watermark
    FROM
    (
        SELECT
            job_id, slot, last_ms, org_id, project_id, task_id, rejections, first_annotation_ms, accepted_ms, created_ms,
            changes, arraySlice(decisions, 1, 1) AS first_decision,
            arrayMap(c -> (c.2, c.3), arrayFilter(c -> empty(first_decision) OR c.1 < first_decision[1].1, creations)) AS before,
            arrayZip((arrayReduce('sumMap', [arrayMap(c -> c.1, before)], [arrayMap(c -> c.2, before)],
                              [arrayMap(c -> toUInt64(1), before)]) AS before_summed).1, before_summed.2) AS created_before,
            days
        FROM (SELECT
            assumeNotNull(job_id) AS job_id, toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60)) AS slot,    max(toUnixTimestamp64Milli(timestamp)) AS last_ms,
            argMax(org_id, timestamp) AS org_id, argMax(project_id, timestamp) AS project_id,
            argMax(task_id, timestamp) AS task_id,
            countIf(scope = 'update:job' AND obj_name = 'state' AND obj_val = 'rejected') AS rejections,
            minIfOrNull(toUnixTimestamp64Milli(timestamp), scope IN ('create:tags', 'create:shapes', 'create:tracks')) AS first_annotation_ms,
            minIfOrNull(toUnixTimestamp64Milli(timestamp), (scope = 'update:job' AND obj_name = 'stage') AND obj_val = 'acceptance') AS accepted_ms,
            minIfOrNull(toUnixTimestamp64Milli(timestamp), scope = 'create:job') AS created_ms,
            groupArrayIf((toUnixTimestamp64Milli(timestamp), ifNull(obj_val, ''), old_value), (scope = 'update:job' AND obj_name = 'stage')) AS changes,
            arraySort(groupArrayIf((toUnixTimestamp64Milli(timestamp), toUInt8(obj_name = 'stage'), ifNull(user_id, 0)),
                                   ((scope = 'update:job' AND obj_name = 'stage' AND obj_val = 'acceptance') OR (scope = 'update:job' AND obj_name = 'state' AND obj_val = 'rejected')))) AS decisions,
            groupArrayIf((toUnixTimestamp64Milli(timestamp), assumeNotNull(user_id), toInt64(ifNull(count, 0))),
                         scope IN ('create:tags', 'create:shapes', 'create:tracks') AND user_id IS NOT NULL) AS creations,
            arraySort(groupUniqArrayIf(toDate(timestamp), (scope = 'create:job' OR scope IN ('create:tags', 'create:shapes', 'create:tracks') OR (scope = 'update:job' AND obj_name IN ('state', 'stage'))))) AS days
        FROM
        (
            -- two disjoint reads: only a stage change's payload is read (the annotation events'
            -- payloads are most of the bytes, and no figure needs them)
            SELECT job_id, org_id, project_id, task_id, timestamp, scope, obj_name, obj_val, user_id, count, '' AS old_value
            FROM `cvat`.events
            WHERE source = 'server' AND job_id IS NOT NULL AND NOT (scope = 'update:job' AND obj_name = 'stage') AND toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60)) IN (SELECT slot FROM job_slots)
                       AND (job_id, toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60))) IN job_slots
            UNION ALL
            SELECT job_id, org_id, project_id, task_id, timestamp, scope, obj_name, obj_val, user_id, count,
                   JSONExtractString(ifNull(payload, ''), 'old_value')
            FROM `cvat`.events
            WHERE source = 'server' AND job_id IS NOT NULL AND (scope = 'update:job' AND obj_name = 'stage') AND toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60)) IN (SELECT slot FROM job_slots)
                       AND (job_id, toStartOfInterval(toDateTime(timestamp, 'Etc/UTC'), toIntervalSecond(60))) IN job_slots
        )
        GROUP BY job_id, slot)
    )
    UNION ALL
    -- the names: the states of the new events only
    SELECT 'name' AS kind, version,
    CAST(user_id, 'UInt64') AS user_id,
    CAST(day, 'Date') AS day,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS slot,
    defaultValueOfTypeName('UInt32') AS slot_s,
    defaultValueOfTypeName('LowCardinality(String)') AS scope,
    defaultValueOfTypeName('Nullable(String)') AS obj_name,
    CAST(org_id, 'Nullable(UInt64)') AS org_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS project_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS task_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS job_id,
    defaultValueOfTypeName('Int64') AS objects,
    defaultValueOfTypeName('Int64') AS track_shapes,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS hour,
    defaultValueOfTypeName('UInt64') AS rejections,
    defaultValueOfTypeName('Int64') AS annotation_ms,
    defaultValueOfTypeName('Int64') AS validation_ms,
    defaultValueOfTypeName('Int64') AS acceptance_ms,
    defaultValueOfTypeName('Nullable(String)') AS current_stage,
    defaultValueOfTypeName('Nullable(Int64)') AS current_since_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS annotation_to_acceptance_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS decided_ms,
    defaultValueOfTypeName('Nullable(UInt8)') AS first_pass,
    defaultValueOfTypeName('Nullable(UInt64)') AS reviewer,
    defaultValueOfTypeName('Nullable(UInt64)') AS annotator,
    defaultValueOfTypeName('Array(Date)') AS days,
    defaultValueOfTypeName('Int64') AS last_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS first_annotation_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS accepted_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS created_ms,
    defaultValueOfTypeName('Array(Tuple(Int64, String, String))') AS changes,
    defaultValueOfTypeName('Array(Tuple(Int64, UInt8, UInt64))') AS first_decision,
    defaultValueOfTypeName('Array(Tuple(UInt64, Int64))') AS created_before,
    CAST(last_name, 'AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS watermark,
    defaultValueOfTypeName('UInt8') AS full,
    defaultValueOfTypeName('UInt64') AS changed_days,
    defaultValueOfTypeName('UInt64') AS changed_jobs,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS slots_watermark
    FROM
    (
        SELECT assumeNotNull(user_id) AS user_id, toDate(timestamp) AS day, org_id,
               argMaxState(toString(assumeNotNull(user_name)), timestamp) AS last_name
        FROM
        (
            SELECT user_id, timestamp, org_id, user_name
            FROM `cvat`.events
            WHERE NOT full_run AND inserted_at > run_since AND inserted_at <= run_until
            AND (adopted_block = 0 OR (toUInt64(splitByChar('_', _part)[3]) > adopted_block AND _block_number > adopted_block))
            UNION ALL
            SELECT user_id, timestamp, org_id, user_name
            FROM `cvat`.events
            WHERE full_run
        )
        WHERE user_id IS NOT NULL AND user_name IS NOT NULL
        GROUP BY user_id, day, org_id
    )
    UNION ALL
    -- the fold: hours, then each day with a folded hour from all its hours
    SELECT 'object_hour' AS kind, version,
    CAST(user_id, 'UInt64') AS user_id,
    CAST(day, 'Date') AS day,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS slot,
    defaultValueOfTypeName('UInt32') AS slot_s,
    CAST(scope, 'LowCardinality(String)') AS scope,
    CAST(obj_name, 'Nullable(String)') AS obj_name,
    CAST(org_id, 'Nullable(UInt64)') AS org_id,
    CAST(project_id, 'Nullable(UInt64)') AS project_id,
    CAST(task_id, 'Nullable(UInt64)') AS task_id,
    CAST(job_id, 'Nullable(UInt64)') AS job_id,
    CAST(objects, 'Int64') AS objects,
    CAST(track_shapes, 'Int64') AS track_shapes,
    CAST(hour, 'DateTime(\'Etc/UTC\')') AS hour,
    defaultValueOfTypeName('UInt64') AS rejections,
    defaultValueOfTypeName('Int64') AS annotation_ms,
    defaultValueOfTypeName('Int64') AS validation_ms,
    defaultValueOfTypeName('Int64') AS acceptance_ms,
    defaultValueOfTypeName('Nullable(String)') AS current_stage,
    defaultValueOfTypeName('Nullable(Int64)') AS current_since_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS annotation_to_acceptance_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS decided_ms,
    defaultValueOfTypeName('Nullable(UInt8)') AS first_pass,
    defaultValueOfTypeName('Nullable(UInt64)') AS reviewer,
    defaultValueOfTypeName('Nullable(UInt64)') AS annotator,
    defaultValueOfTypeName('Array(Date)') AS days,
    defaultValueOfTypeName('Int64') AS last_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS first_annotation_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS accepted_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS created_ms,
    defaultValueOfTypeName('Array(Tuple(Int64, String, String))') AS changes,
    defaultValueOfTypeName('Array(Tuple(Int64, UInt8, UInt64))') AS first_decision,
    defaultValueOfTypeName('Array(Tuple(UInt64, Int64))') AS created_before,
    defaultValueOfTypeName('AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS watermark,
    defaultValueOfTypeName('UInt8') AS full,
    defaultValueOfTypeName('UInt64') AS changed_days,
    defaultValueOfTypeName('UInt64') AS changed_jobs,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS slots_watermark
    FROM object_hour_rows
    UNION ALL
    SELECT 'object' AS kind, version,
    CAST(user_id, 'UInt64') AS user_id,
    CAST(day, 'Date') AS day,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS slot,
    defaultValueOfTypeName('UInt32') AS slot_s,
    CAST(scope, 'LowCardinality(String)') AS scope,
    CAST(obj_name, 'Nullable(String)') AS obj_name,
    CAST(org_id, 'Nullable(UInt64)') AS org_id,
    CAST(project_id, 'Nullable(UInt64)') AS project_id,
    CAST(task_id, 'Nullable(UInt64)') AS task_id,
    CAST(job_id, 'Nullable(UInt64)') AS job_id,
    CAST(objects, 'Int64') AS objects,
    CAST(track_shapes, 'Int64') AS track_shapes,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS hour,
    defaultValueOfTypeName('UInt64') AS rejections,
    defaultValueOfTypeName('Int64') AS annotation_ms,
    defaultValueOfTypeName('Int64') AS validation_ms,
    defaultValueOfTypeName('Int64') AS acceptance_ms,
    defaultValueOfTypeName('Nullable(String)') AS current_stage,
    defaultValueOfTypeName('Nullable(Int64)') AS current_since_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS annotation_to_acceptance_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS decided_ms,
    defaultValueOfTypeName('Nullable(UInt8)') AS first_pass,
    defaultValueOfTypeName('Nullable(UInt64)') AS reviewer,
    defaultValueOfTypeName('Nullable(UInt64)') AS annotator,
    defaultValueOfTypeName('Array(Date)') AS days,
    defaultValueOfTypeName('Int64') AS last_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS first_annotation_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS accepted_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS created_ms,
    defaultValueOfTypeName('Array(Tuple(Int64, String, String))') AS changes,
    defaultValueOfTypeName('Array(Tuple(Int64, UInt8, UInt64))') AS first_decision,
    defaultValueOfTypeName('Array(Tuple(UInt64, Int64))') AS created_before,
    defaultValueOfTypeName('AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS watermark,
    defaultValueOfTypeName('UInt8') AS full,
    defaultValueOfTypeName('UInt64') AS changed_days,
    defaultValueOfTypeName('UInt64') AS changed_jobs,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS slots_watermark
    FROM
    (
        SELECT user_id, day, org_id, project_id, task_id, job_id, scope, obj_name, sum(objects) AS objects, sum(track_shapes) AS track_shapes
        FROM
        (
            SELECT user_id, day, org_id, project_id, task_id, job_id, scope, obj_name, objects, track_shapes
            FROM `cvat`.productivity_object_hours FINAL
            WHERE NOT full_fold AND (user_id, toDate(hour)) IN (SELECT DISTINCT user_id, toDate(hour) FROM object_hours)
              AND (user_id, hour) NOT IN object_hours
            UNION ALL
            SELECT user_id, day, org_id, project_id, task_id, job_id, scope, obj_name, objects, track_shapes
            FROM object_hour_rows
        )
        GROUP BY user_id, day, org_id, project_id, task_id, job_id, scope, obj_name
    )
    UNION ALL
    SELECT 'job_hour' AS kind, version,
    defaultValueOfTypeName('UInt64') AS user_id,
    defaultValueOfTypeName('Date') AS day,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS slot,
    defaultValueOfTypeName('UInt32') AS slot_s,
    defaultValueOfTypeName('LowCardinality(String)') AS scope,
    defaultValueOfTypeName('Nullable(String)') AS obj_name,
    CAST(org_id, 'Nullable(UInt64)') AS org_id,
    CAST(project_id, 'Nullable(UInt64)') AS project_id,
    CAST(task_id, 'Nullable(UInt64)') AS task_id,
    CAST(job_id, 'Nullable(UInt64)') AS job_id,
    defaultValueOfTypeName('Int64') AS objects,
    defaultValueOfTypeName('Int64') AS track_shapes,
    CAST(hour, 'DateTime(\'Etc/UTC\')') AS hour,
    CAST(rejections, 'UInt64') AS rejections,
    defaultValueOfTypeName('Int64') AS annotation_ms,
    defaultValueOfTypeName('Int64') AS validation_ms,
    defaultValueOfTypeName('Int64') AS acceptance_ms,
    defaultValueOfTypeName('Nullable(String)') AS current_stage,
    defaultValueOfTypeName('Nullable(Int64)') AS current_since_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS annotation_to_acceptance_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS decided_ms,
    defaultValueOfTypeName('Nullable(UInt8)') AS first_pass,
    defaultValueOfTypeName('Nullable(UInt64)') AS reviewer,
    defaultValueOfTypeName('Nullable(UInt64)') AS annotator,
    CAST(days, 'Array(Date)') AS days,
    CAST(last_ms, 'Int64') AS last_ms,
    CAST(first_annotation_ms, 'Nullable(Int64)') AS first_annotation_ms,
    CAST(accepted_ms, 'Nullable(Int64)') AS accepted_ms,
    CAST(created_ms, 'Nullable(Int64)') AS created_ms,
    CAST(changes, 'Array(Tuple(Int64, String, String))') AS changes,
    CAST(first_decision, 'Array(Tuple(Int64, UInt8, UInt64))') AS first_decision,
    CAST(created_before, 'Array(Tuple(UInt64, Int64))') AS created_before,
    defaultValueOfTypeName('AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS watermark,
    defaultValueOfTypeName('UInt8') AS full,
    defaultValueOfTypeName('UInt64') AS changed_days,
    defaultValueOfTypeName('UInt64') AS changed_jobs,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS slots_watermark
    FROM (SELECT *, slot AS hour FROM job_hour_rows)
    UNION ALL
    -- each job with a folded hour, from all its hours
    SELECT 'job' AS kind, version,
    defaultValueOfTypeName('UInt64') AS user_id,
    defaultValueOfTypeName('Date') AS day,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS slot,
    defaultValueOfTypeName('UInt32') AS slot_s,
    defaultValueOfTypeName('LowCardinality(String)') AS scope,
    defaultValueOfTypeName('Nullable(String)') AS obj_name,
    CAST(org_id, 'Nullable(UInt64)') AS org_id,
    CAST(project_id, 'Nullable(UInt64)') AS project_id,
    CAST(task_id, 'Nullable(UInt64)') AS task_id,
    CAST(job_id, 'Nullable(UInt64)') AS job_id,
    defaultValueOfTypeName('Int64') AS objects,
    defaultValueOfTypeName('Int64') AS track_shapes,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS hour,
    CAST(rejections, 'UInt64') AS rejections,
    CAST(annotation_ms, 'Int64') AS annotation_ms,
    CAST(validation_ms, 'Int64') AS validation_ms,
    CAST(acceptance_ms, 'Int64') AS acceptance_ms,
    CAST(current_stage, 'Nullable(String)') AS current_stage,
    CAST(current_since_ms, 'Nullable(Int64)') AS current_since_ms,
    CAST(annotation_to_acceptance_ms, 'Nullable(Int64)') AS annotation_to_acceptance_ms,
    CAST(decided_ms, 'Nullable(Int64)') AS decided_ms,
    CAST(first_pass, 'Nullable(UInt8)') AS first_pass,
    CAST(reviewer, 'Nullable(UInt64)') AS reviewer,
    CAST(annotator, 'Nullable(UInt64)') AS annotator,
    CAST(days, 'Array(Date)') AS days,
    defaultValueOfTypeName('Int64') AS last_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS first_annotation_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS accepted_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS created_ms,
    defaultValueOfTypeName('Array(Tuple(Int64, String, String))') AS changes,
    defaultValueOfTypeName('Array(Tuple(Int64, UInt8, UInt64))') AS first_decision,
    defaultValueOfTypeName('Array(Tuple(UInt64, Int64))') AS created_before,
    defaultValueOfTypeName('AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS watermark,
    defaultValueOfTypeName('UInt8') AS full,
    defaultValueOfTypeName('UInt64') AS changed_days,
    defaultValueOfTypeName('UInt64') AS changed_jobs,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS slots_watermark
    FROM
    (
        SELECT
            job_id, org_id, project_id, task_id, rejections,
            arraySort(changes) AS sorted_changes,
            -- (when, stage): the job's creation in the stage its first change left, then each change
            arraySort(arrayConcat(
                if(created_ms IS NULL, [], [(assumeNotNull(created_ms), if(empty(sorted_changes), 'annotation', sorted_changes[1].3))]),
                arrayMap(c -> (c.1, c.2), sorted_changes))) AS stages,
            arrayMap(i -> (stages[i].2, stages[i + 1].1 - stages[i].1), range(1, length(stages))) AS segments,
            arraySum(arrayMap(s -> if(s.1 = 'annotation', s.2, 0), segments)) AS annotation_ms,
            arraySum(arrayMap(s -> if(s.1 = 'validation', s.2, 0), segments)) AS validation_ms,
            arraySum(arrayMap(s -> if(s.1 = 'acceptance', s.2, 0), segments)) AS acceptance_ms,
            if(empty(stages), NULL, stages[-1].2) AS current_stage,
            if(empty(stages), NULL, stages[-1].1) AS current_since_ms,
            if(accepted_ms >= first_annotation_ms, accepted_ms - first_annotation_ms, NULL) AS annotation_to_acceptance_ms,
            if(empty(decisions), NULL, decisions[1].1) AS decided_ms,
            if(empty(decisions), NULL, decisions[1].2 = 1) AS first_pass,
            if(empty(decisions), NULL, decisions[1].3) AS reviewer,
            created_before AS created_by,
            arrayZip((arrayReduce('sumMap', [arrayMap(c -> c.1, created_by)], [arrayMap(c -> c.2, created_by)],
                              [arrayMap(c -> toUInt64(1), created_by)]) AS objects_summed).1, objects_summed.2) AS objects_by,
            if(decided_ms IS NULL OR empty(objects_by), NULL,
               toNullable(arraySort(x -> (-x.2, x.1), objects_by)[1].1)) AS annotator,
            days
        FROM (SELECT *, first_decision AS decisions FROM (SELECT job_id, m_last_ms AS last_ms, m_org_id AS org_id, m_project_id AS project_id,
               m_task_id AS task_id, m_rejections AS rejections, m_first_annotation_ms AS first_annotation_ms,
               m_accepted_ms AS accepted_ms, m_created_ms AS created_ms, m_changes AS changes, m_first_decision AS first_decision,
               arrayZip((arrayReduce('sumMap', [arrayMap(c -> c.1, m_before)], [arrayMap(c -> c.2, m_before)],
                              [arrayMap(c -> toUInt64(1), m_before)]) AS m_summed).1, m_summed.2) AS created_before,
               m_days AS days
        FROM
        (
            SELECT job_id,           max(last_ms) AS m_last_ms, argMax(org_id, last_ms) AS m_org_id, argMax(project_id, last_ms) AS m_project_id,
                   argMax(task_id, last_ms) AS m_task_id, sum(rejections) AS m_rejections,
                   min(first_annotation_ms) AS m_first_annotation_ms, min(accepted_ms) AS m_accepted_ms,
                   min(created_ms) AS m_created_ms, groupArrayArray(changes) AS m_changes,
                   arraySlice(arraySort(groupArrayArray(first_decision)), 1, 1) AS m_first_decision,
                   arrayFlatten(arrayMap(s -> s.2, arrayFilter(s -> empty(m_first_decision) OR s.1 <= m_first_decision[1].1,
                       groupArray((toInt64(toUnixTimestamp(slot)) * 1000, created_before))))) AS m_before,
                   arraySort(groupUniqArrayArray(days)) AS m_days
            FROM (SELECT job_id, hour AS slot, last_ms, org_id, project_id, task_id, rejections, first_annotation_ms, accepted_ms, created_ms, changes, first_decision, created_before, days
                    FROM `cvat`.productivity_job_hours FINAL
                    WHERE NOT full_fold AND job_id IN (SELECT job_id FROM job_hours)
                      AND (job_id, hour) NOT IN job_hours
                    UNION ALL
                    SELECT job_id, slot, last_ms, org_id, project_id, task_id, rejections, first_annotation_ms, accepted_ms, created_ms, changes, first_decision, created_before, days
                    FROM job_hour_rows)
            GROUP BY job_id)))
    )
    UNION ALL
    SELECT 'run' AS kind, version,
    defaultValueOfTypeName('UInt64') AS user_id,
    defaultValueOfTypeName('Date') AS day,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS slot,
    CAST(60, 'UInt32') AS slot_s,
    defaultValueOfTypeName('LowCardinality(String)') AS scope,
    defaultValueOfTypeName('Nullable(String)') AS obj_name,
    defaultValueOfTypeName('Nullable(UInt64)') AS org_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS project_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS task_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS job_id,
    defaultValueOfTypeName('Int64') AS objects,
    defaultValueOfTypeName('Int64') AS track_shapes,
    defaultValueOfTypeName('DateTime(\'Etc/UTC\')') AS hour,
    defaultValueOfTypeName('UInt64') AS rejections,
    defaultValueOfTypeName('Int64') AS annotation_ms,
    defaultValueOfTypeName('Int64') AS validation_ms,
    defaultValueOfTypeName('Int64') AS acceptance_ms,
    defaultValueOfTypeName('Nullable(String)') AS current_stage,
    defaultValueOfTypeName('Nullable(Int64)') AS current_since_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS annotation_to_acceptance_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS decided_ms,
    defaultValueOfTypeName('Nullable(UInt8)') AS first_pass,
    defaultValueOfTypeName('Nullable(UInt64)') AS reviewer,
    defaultValueOfTypeName('Nullable(UInt64)') AS annotator,
    defaultValueOfTypeName('Array(Date)') AS days,
    defaultValueOfTypeName('Int64') AS last_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS first_annotation_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS accepted_ms,
    defaultValueOfTypeName('Nullable(Int64)') AS created_ms,
    defaultValueOfTypeName('Array(Tuple(Int64, String, String))') AS changes,
    defaultValueOfTypeName('Array(Tuple(Int64, UInt8, UInt64))') AS first_decision,
    defaultValueOfTypeName('Array(Tuple(UInt64, Int64))') AS created_before,
    defaultValueOfTypeName('AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    CAST(logged.1, 'DateTime64(6, \'UTC\')') AS watermark,
    CAST(full_run, 'UInt8') AS full,
    CAST((SELECT count() FROM (SELECT DISTINCT user_id, toDate(hour) FROM object_hours)), 'UInt64') AS changed_days,
    CAST((SELECT uniqExact(job_id) FROM job_hours), 'UInt64') AS changed_jobs,
    CAST(run_until, 'DateTime64(6, \'UTC\')') AS slots_watermark
)
ORDER BY kind
SETTINGS
    max_threads = 1,
    max_memory_usage = 1073741824,
    max_bytes_before_external_group_by = 134217728,
    max_bytes_before_external_sort = 134217728
