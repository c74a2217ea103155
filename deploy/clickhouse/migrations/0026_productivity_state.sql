-- reapply: on-change
-- The productivity state (docs/productivity.md, "Kept by the engine"): objects per user and
-- day, review figures per job, and the refreshable view that keeps them
-- (queries/productivity_state.jinja). It holds the refresh interval and limits of the spec,
-- so it is applied again when they change (the tables are kept; the view is made again).
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
    track_shapes Int64,
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
    days Array(Date),
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

CREATE TABLE IF NOT EXISTS `cvat`.productivity_apply
(
    kind Enum8('object' = 1, 'job' = 2, 'name' = 3, 'run' = 4),
    version UInt64,
    user_id UInt64,
    day Date,
    scope LowCardinality(String),
    obj_name Nullable(String),
    org_id Nullable(UInt64),
    project_id Nullable(UInt64),
    task_id Nullable(UInt64),
    job_id Nullable(UInt64),
    objects Int64,
    track_shapes Int64,
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
    last_name AggregateFunction(argMax, String, DateTime64(3, 'Etc/UTC')),
    watermark DateTime64(6, 'UTC'),
    full UInt8,
    changed_days UInt64,
    changed_jobs UInt64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.productivity_apply_objects TO `cvat`.productivity_objects AS
SELECT user_id, day, scope, obj_name, org_id, project_id, task_id, job_id, objects, track_shapes, version
FROM `cvat`.productivity_apply
WHERE kind = 'object';

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.productivity_apply_jobs TO `cvat`.productivity_jobs AS
SELECT assumeNotNull(job_id) AS job_id, org_id, project_id, task_id, rejections, annotation_ms, validation_ms, acceptance_ms, current_stage, current_since_ms, annotation_to_acceptance_ms, decided_ms, first_pass, reviewer, annotator, days, version
FROM `cvat`.productivity_apply
WHERE kind = 'job';

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.productivity_apply_names TO `cvat`.productivity_user_names AS
SELECT user_id, day, org_id, last_name
FROM `cvat`.productivity_apply
WHERE kind = 'name';

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.productivity_apply_log TO `cvat`.productivity_refresh_log AS
SELECT now64(6, 'UTC') AS refreshed_at, watermark, full, changed_days, changed_jobs
FROM `cvat`.productivity_apply
WHERE kind = 'run';

DROP VIEW IF EXISTS `cvat`.productivity_refresh;

-- A failed run is taken again by the next one (the watermark stays).
-- productivity_refresh runs productivity_refresh_query on its schedule: a plain view, so the engine analyses the
-- query once a run, not twice. refresh_retries = 0: the next run takes a failed one again.
DROP VIEW IF EXISTS `cvat`.productivity_refresh_query;

CREATE VIEW `cvat`.productivity_refresh_query AS
WITH
    (SELECT max(watermark) FROM `cvat`.productivity_refresh_log) AS logged,
    -- no run logged yet: recompute everything. Not named `full`: each branch below gives
    -- productivity_apply's `full` a value of its own, and a name a subquery has no column of
    -- resolves to the enclosing SELECT's alias before the WITH's (chdb 26.9), so every
    -- `full` inside the branches read 0: a first run took only the events stamped as new,
    -- none of a CVAT history adopted without a stamp (tests/test_adoption.py).
    toUInt8(logged = toDateTime64(0, 6, 'UTC')) AS full_run,
    now64(6, 'UTC') AS run_until,
    logged - toIntervalSecond(60) AS run_since,
    ifNull((SELECT toUInt64OrZero(extract(comment, 'blocks up to ([0-9]+)')) FROM system.columns
            WHERE database = 'cvat' AND table = 'events'
              AND name = 'inserted_at'), 0) AS adopted_block,
    toUInt64(toUnixTimestamp64Micro(run_until)) AS version,
    days_changed AS
    (
        SELECT DISTINCT user_id, day
        FROM
        (
            SELECT assumeNotNull(user_id) AS user_id, toDate(timestamp) AS day
            FROM `cvat`.events
            WHERE NOT full_run AND inserted_at > run_since AND inserted_at <= run_until
            AND (adopted_block = 0 OR (toUInt64(splitByChar('_', _part)[3]) > adopted_block AND _block_number > adopted_block)) AND source = 'server' AND user_id IS NOT NULL AND scope IN ('create:tags', 'create:shapes', 'create:tracks', 'update:tags', 'update:shapes', 'update:tracks', 'delete:tags', 'delete:shapes', 'delete:tracks')
            UNION ALL
            SELECT assumeNotNull(user_id) AS user_id, toDate(timestamp) AS day
            FROM `cvat`.events
            WHERE full_run AND source = 'server' AND user_id IS NOT NULL AND scope IN ('create:tags', 'create:shapes', 'create:tracks', 'update:tags', 'update:shapes', 'update:tracks', 'delete:tags', 'delete:shapes', 'delete:tracks')
        )
    ),
    jobs_changed AS
    (
        SELECT DISTINCT job_id
        FROM
        (
            SELECT assumeNotNull(job_id) AS job_id
            FROM `cvat`.events
            WHERE NOT full_run AND inserted_at > run_since AND inserted_at <= run_until
            AND (adopted_block = 0 OR (toUInt64(splitByChar('_', _part)[3]) > adopted_block AND _block_number > adopted_block)) AND source = 'server' AND job_id IS NOT NULL
            UNION ALL
            SELECT assumeNotNull(job_id) AS job_id
            FROM `cvat`.events
            WHERE full_run AND source = 'server' AND job_id IS NOT NULL
        )
    )
SELECT *
FROM
(
    -- each changed (user, day): a range of the events' sort key
    SELECT 'object' AS kind, version,
    CAST(user_id, 'UInt64') AS user_id,
    CAST(day, 'Date') AS day,
    CAST(scope, 'LowCardinality(String)') AS scope,
    CAST(obj_name, 'Nullable(String)') AS obj_name,
    CAST(org_id, 'Nullable(UInt64)') AS org_id,
    CAST(project_id, 'Nullable(UInt64)') AS project_id,
    CAST(task_id, 'Nullable(UInt64)') AS task_id,
    CAST(job_id, 'Nullable(UInt64)') AS job_id,
    CAST(objects, 'Int64') AS objects,
    CAST(track_shapes, 'Int64') AS track_shapes,
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
    defaultValueOfTypeName('AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS watermark,
    defaultValueOfTypeName('UInt8') AS full,
    defaultValueOfTypeName('UInt64') AS changed_days,
    defaultValueOfTypeName('UInt64') AS changed_jobs
    FROM
    (
        SELECT
            assumeNotNull(user_id) AS user_id, toDate(timestamp) AS day, org_id, project_id, task_id, job_id, scope, obj_name,
            toInt64(sum(ifNull(count, 0))) AS objects,
            toInt64(sum(if(endsWith(scope, ':tracks'),
                arraySum(arrayMap(t -> JSONExtractInt(t, 'visible_shapes_count_diff'), JSONExtractArrayRaw(ifNull(payload, ''), 'tracks'))),
                0))) AS track_shapes
        FROM `cvat`.events
        WHERE scope IN ('create:tags', 'create:shapes', 'create:tracks', 'update:tags', 'update:shapes', 'update:tracks', 'delete:tags', 'delete:shapes', 'delete:tracks') AND source = 'server' AND user_id IS NOT NULL
          AND user_id IN (SELECT user_id FROM days_changed)
                       AND timestamp >= (SELECT min(day) FROM days_changed)
                       AND (user_id, toDate(timestamp)) IN days_changed
        GROUP BY user_id, day, org_id, project_id, task_id, job_id, scope, obj_name
    )
    UNION ALL
    -- each changed job, from all its events (the minmax indexes on job_id, 0002's and 0028's,
    -- skip the granules whose jobs are all others)
    SELECT 'job' AS kind, version,
    defaultValueOfTypeName('UInt64') AS user_id,
    defaultValueOfTypeName('Date') AS day,
    defaultValueOfTypeName('LowCardinality(String)') AS scope,
    defaultValueOfTypeName('Nullable(String)') AS obj_name,
    CAST(org_id, 'Nullable(UInt64)') AS org_id,
    CAST(project_id, 'Nullable(UInt64)') AS project_id,
    CAST(task_id, 'Nullable(UInt64)') AS task_id,
    CAST(job_id, 'Nullable(UInt64)') AS job_id,
    defaultValueOfTypeName('Int64') AS objects,
    defaultValueOfTypeName('Int64') AS track_shapes,
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
    defaultValueOfTypeName('AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS watermark,
    defaultValueOfTypeName('UInt8') AS full,
    defaultValueOfTypeName('UInt64') AS changed_days,
    defaultValueOfTypeName('UInt64') AS changed_jobs
    FROM
    (
        SELECT
            job_id, org_id, project_id, task_id, rejections,
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
            -- the annotator, from the same pass: each creator's objects before the first decision
            arrayFilter(c -> c.1 < ifNull(decided_ms, 0), creations) AS before,
            arrayDistinct(arrayMap(c -> c.2, before)) AS creators,
            arrayMap(u -> (u, arraySum(arrayMap(c -> if(c.2 = u, c.3, 0), before))), creators) AS created_by,
            if(decided_ms IS NULL OR empty(created_by), NULL,
               toNullable(arraySort(x -> (-x.2, x.1), created_by)[1].1)) AS annotator,
            days
        FROM
        (
            SELECT
                assumeNotNull(job_id) AS job_id,
                argMax(org_id, timestamp) AS org_id, argMax(project_id, timestamp) AS project_id,
                argMax(task_id, timestamp) AS task_id,
                countIf(scope = 'update:job' AND obj_name = 'state' AND obj_val = 'rejected') AS rejections,
                minIfOrNull(toUnixTimestamp64Milli(timestamp), scope IN ('create:tags', 'create:shapes', 'create:tracks')) AS first_annotation_ms,
                minIfOrNull(toUnixTimestamp64Milli(timestamp), (scope = 'update:job' AND obj_name = 'stage') AND obj_val = 'acceptance') AS accepted_ms,
                minIfOrNull(toUnixTimestamp64Milli(timestamp), scope = 'create:job') AS created_ms,
                arraySort(groupArrayIf((toUnixTimestamp64Milli(timestamp), ifNull(obj_val, ''), old_value), (scope = 'update:job' AND obj_name = 'stage'))) AS changes,
                -- (when, stage): the job's creation in the stage its first change left, then each change
                arraySort(arrayConcat(
                    if(created_ms IS NULL, [], [(assumeNotNull(created_ms), if(empty(changes), 'annotation', changes[1].3))]),
                    arrayMap(c -> (c.1, c.2), changes))) AS stages,
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
                WHERE source = 'server' AND job_id IS NOT NULL AND NOT (scope = 'update:job' AND obj_name = 'stage') AND job_id IN jobs_changed
                UNION ALL
                SELECT job_id, org_id, project_id, task_id, timestamp, scope, obj_name, obj_val, user_id, count,
                       JSONExtractString(ifNull(payload, ''), 'old_value')
                FROM `cvat`.events
                WHERE source = 'server' AND job_id IS NOT NULL AND (scope = 'update:job' AND obj_name = 'stage') AND job_id IN jobs_changed
            )
            GROUP BY job_id
        )
    )
    UNION ALL
    -- the names: the states of the new events only
    SELECT 'name' AS kind, version,
    CAST(user_id, 'UInt64') AS user_id,
    CAST(day, 'Date') AS day,
    defaultValueOfTypeName('LowCardinality(String)') AS scope,
    defaultValueOfTypeName('Nullable(String)') AS obj_name,
    CAST(org_id, 'Nullable(UInt64)') AS org_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS project_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS task_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS job_id,
    defaultValueOfTypeName('Int64') AS objects,
    defaultValueOfTypeName('Int64') AS track_shapes,
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
    CAST(last_name, 'AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    defaultValueOfTypeName('DateTime64(6, \'UTC\')') AS watermark,
    defaultValueOfTypeName('UInt8') AS full,
    defaultValueOfTypeName('UInt64') AS changed_days,
    defaultValueOfTypeName('UInt64') AS changed_jobs
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
    SELECT 'run' AS kind, version,
    defaultValueOfTypeName('UInt64') AS user_id,
    defaultValueOfTypeName('Date') AS day,
    defaultValueOfTypeName('LowCardinality(String)') AS scope,
    defaultValueOfTypeName('Nullable(String)') AS obj_name,
    defaultValueOfTypeName('Nullable(UInt64)') AS org_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS project_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS task_id,
    defaultValueOfTypeName('Nullable(UInt64)') AS job_id,
    defaultValueOfTypeName('Int64') AS objects,
    defaultValueOfTypeName('Int64') AS track_shapes,
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
    defaultValueOfTypeName('AggregateFunction(argMax, String, DateTime64(3, \'Etc/UTC\'))') AS last_name,
    CAST(run_until, 'DateTime64(6, \'UTC\')') AS watermark,
    CAST(full_run, 'UInt8') AS full,
    CAST((SELECT count() FROM days_changed), 'UInt64') AS changed_days,
    CAST((SELECT count() FROM jobs_changed), 'UInt64') AS changed_jobs
)
ORDER BY kind;

CREATE MATERIALIZED VIEW `cvat`.productivity_refresh
REFRESH EVERY 60 SECOND
SETTINGS refresh_retries = 0
APPEND TO `cvat`.productivity_apply AS
SELECT * FROM `cvat`.productivity_refresh_query
SETTINGS
    max_threads = 1,
    max_memory_usage = 1073741824,
    max_bytes_before_external_group_by = 134217728,
    max_bytes_before_external_sort = 134217728
