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
WHERE kind = 'run';

-- refresh_retries = 0: the view's own retries would repeat a failed run at once; the
-- runs after it record the failure and back off instead.
CREATE MATERIALIZED VIEW `cvat`.working_time_refresh
REFRESH EVERY 10 SECOND
SETTINGS refresh_retries = 0
APPEND TO `cvat`.working_time_apply AS
WITH
    -- the last logged run (a failure's row keeps the watermark of the run before it)
    (SELECT argMax((watermark, rule, full_bucket, full_buckets, failures, refreshed_at), (watermark, refreshed_at))
     FROM `cvat`.working_time_refresh_log) AS logged_run,
    logged_run.1 AS logged, logged_run.2 AS logged_rule, logged_run.3 AS logged_bucket,
    logged_run.4 AS logged_buckets, logged_run.5 AS logged_failures, logged_run.6 AS logged_at,
    (SELECT any(exception) FROM system.view_refreshes
     WHERE database = 'cvat' AND view = 'working_time_refresh') AS last_error,
    now64(6, 'UTC') AS run_until,
    -- CVAT's history adopted without a stamp ends at this block (0: none adopted): no row of
    -- a block at or below it is new; a part whose name ends at or below it is not even read
    -- (docs/cvat-stack.md, "Adopting CVAT's history")
    ifNull((SELECT toUInt64OrZero(extract(comment, 'blocks up to ([0-9]+)')) FROM system.columns
            WHERE database = 'cvat' AND table = 'events'
              AND name = 'inserted_at'), 0) AS adopted_block,
    -- record a failure, wait out the back-off after one, or work
    multiIf(last_error != '', 'record',
            logged_failures > 0 AND run_until < logged_at + toIntervalSecond(toUInt32(least(
                10 * exp2(least(logged_failures, 30) - 1),
                600))), 'wait',
            'work') AS action,
    -- the bucket of users of a full recompute this run does (-1: none), and how many there are
    toInt32(multiIf(action != 'work', -1,
                    logged_rule != '[100000, ["change:frame"]]', 0,
                    logged_bucket >= 0 AND logged_bucket + 1 < logged_buckets, logged_bucket + 1,
                    -1)) AS bucket,
    toUInt32(multiIf(bucket < 0, 0,
                     logged_rule != '[100000, ["change:frame"]]',
                     greatest(1, ceil((SELECT count() FROM `cvat`.events) / 1000000)),
                     logged_buckets)) AS buckets,
    if(action = 'work', logged - toIntervalSecond(60), run_until) AS run_since,
    -- the users with new client events, from the hour of their earliest one; every user of
    -- this run's bucket from their first event; those of later buckets wait for theirs
    changed AS
    (
        SELECT user_id, toStartOfHour(min(timestamp)) AS from_hour
        FROM
        (
            -- two reads, not one with OR: the first skips by the inserted_at index, the
            -- second reads nothing outside a full recompute
            SELECT
                assumeNotNull(user_id) AS user_id, timestamp, scope, duration, job_id, task_id, project_id,
                toUnixTimestamp64Milli(timestamp) AS ts,
                ts + if(scope IN ('change:frame'), toInt64(duration), 0) AS end_ms
            FROM
            (
                -- filtered before user_id is renamed to its non-Nullable self
                SELECT user_id, timestamp, scope, duration, job_id, task_id, project_id
                FROM `cvat`.events
                WHERE source = 'client' AND user_id IS NOT NULL AND (inserted_at > run_since AND inserted_at <= run_until
            AND (adopted_block = 0 OR (toUInt64(splitByChar('_', _part)[3]) > adopted_block AND _block_number > adopted_block)))
            )
            UNION ALL
            SELECT
                assumeNotNull(user_id) AS user_id, timestamp, scope, duration, job_id, task_id, project_id,
                toUnixTimestamp64Milli(timestamp) AS ts,
                ts + if(scope IN ('change:frame'), toInt64(duration), 0) AS end_ms
            FROM
            (
                -- filtered before user_id is renamed to its non-Nullable self
                SELECT user_id, timestamp, scope, duration, job_id, task_id, project_id
                FROM `cvat`.events
                WHERE source = 'client' AND user_id IS NOT NULL AND (bucket >= 0 AND cityHash64(user_id) % buckets = bucket)
            )
        )
        WHERE NOT (bucket >= 0 AND cityHash64(user_id) % buckets > bucket)
        GROUP BY user_id
    ),
    -- each changed user with the state carried over from the checkpoint before from_hour
    users AS
    (
        SELECT
            changed.user_id AS user_id, changed.from_hour AS from_hour,
            ifNull(carried.has_prev, 0) AS has_prev, ifNull(carried.c_end, 0) AS c_end,
            carried.c_job AS c_job, carried.c_task AS c_task, carried.c_project AS c_project
        FROM changed
        LEFT JOIN
        (
            SELECT
                k.user_id AS user_id, toUInt8(1) AS has_prev,
                argMax((k.run_end_ms, k.last_job_id, k.last_task_id, k.last_project_id), k.hour) AS last,
                last.1 AS c_end, last.2 AS c_job, last.3 AS c_task, last.4 AS c_project
            FROM `cvat`.working_time_checkpoints AS k FINAL
            INNER JOIN changed ON k.user_id = changed.user_id
            WHERE k.hour < changed.from_hour
            GROUP BY k.user_id
        ) AS carried ON changed.user_id = carried.user_id
    ),
    -- the rule over each changed user's events from their from_hour on
    stage AS
    (
        SELECT
            *,
            if(has_prev, greatest(c_end, prev_max), if(rn = 1, ts, prev_max)) AS p_end,
            if(ts > p_end AND ts - p_end < 100000, ts - p_end, 0)
                + greatest(end_ms - greatest(p_end, ts), 0) AS working_time_ms,
            if(rn = 1, if(has_prev, c_job, job_id), lag_job) AS credited_job_id,
            if(rn = 1, if(has_prev, c_task, task_id), lag_task) AS credited_task_id,
            if(rn = 1, if(has_prev, c_project, project_id), lag_project) AS credited_project_id
        FROM
        (
            SELECT
                e.*,
                ifNull(c.has_prev, 0) AS has_prev, c.c_end AS c_end,
                c.c_job AS c_job, c.c_task AS c_task, c.c_project AS c_project,
                row_number() OVER w_lag AS rn,
                -- ROWS, not RANGE: a tied event must not see its own or a later peer's end.
                max(e.end_ms) OVER w_before AS prev_max,
                lagInFrame(e.job_id) OVER w_lag AS lag_job,
                lagInFrame(e.task_id) OVER w_lag AS lag_task,
                lagInFrame(e.project_id) OVER w_lag AS lag_project
            FROM (SELECT e.* FROM (SELECT
            assumeNotNull(user_id) AS user_id, timestamp, scope, duration, job_id, task_id, project_id,
            toUnixTimestamp64Milli(timestamp) AS ts,
            ts + if(scope IN ('change:frame'), toInt64(duration), 0) AS end_ms
        FROM
        (
            -- filtered before user_id is renamed to its non-Nullable self
            SELECT user_id, timestamp, scope, duration, job_id, task_id, project_id
            FROM `cvat`.events
            WHERE source = 'client' AND user_id IS NOT NULL AND (user_id IN (SELECT user_id FROM users)
                  AND timestamp >= (SELECT min(from_hour) FROM users))
        )) AS e
              INNER JOIN users AS s ON e.user_id = s.user_id
              WHERE e.timestamp >= s.from_hour) AS e
            LEFT JOIN (SELECT user_id, has_prev, c_end, c_job, c_task, c_project FROM users WHERE has_prev = 1) AS c ON e.user_id = c.user_id
            WINDOW
                w_before AS (PARTITION BY e.user_id ORDER BY e.ts, e.end_ms, e.scope, ifNull(e.job_id, 0), ifNull(e.task_id, 0), ifNull(e.project_id, 0)
                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                w_lag AS (PARTITION BY e.user_id ORDER BY e.ts, e.end_ms, e.scope, ifNull(e.job_id, 0), ifNull(e.task_id, 0), ifNull(e.project_id, 0)
                          ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
        )
    )
SELECT *
FROM
(
    -- totals: new minus stored, per (user, hour >= from_hour, credited ids)
    SELECT
        'total' AS kind, user_id, hour, project_id, task_id, job_id, sum(ms) AS working_time_ms,
        0 AS run_end_ms, 0 AS version, run_until AS watermark, '' AS rule, toUInt8(bucket >= 0) AS full,
        0 AS users, toInt32(-1) AS full_bucket, toUInt32(0) AS full_buckets, toUInt32(0) AS failures, '' AS error
    FROM
    (
        SELECT user_id, toStartOfHour(timestamp) AS hour, credited_project_id AS project_id,
               credited_task_id AS task_id, credited_job_id AS job_id, toInt64(working_time_ms) AS ms
        FROM stage
        UNION ALL
        SELECT t.user_id, t.hour, t.project_id, t.task_id, t.job_id, -t.working_time_ms
        FROM `cvat`.working_time_totals AS t
        INNER JOIN users AS s ON t.user_id = s.user_id
        WHERE t.hour >= s.from_hour
    )
    GROUP BY user_id, hour, project_id, task_id, job_id
    HAVING working_time_ms != 0
    UNION ALL
    -- checkpoints: per user and recomputed hour, the running end after it and its last ids
    SELECT
        'checkpoint', h.user_id, h.hour, h.last.3, h.last.2, h.last.1, 0,
        greatest(if(s.has_prev = 1, s.c_end, 0),
                 max(h.hour_end) OVER (PARTITION BY h.user_id ORDER BY h.hour ROWS UNBOUNDED PRECEDING)),
        toUInt64(toUnixTimestamp64Micro(run_until)), run_until, '', toUInt8(bucket >= 0), 0, -1, 0, 0, ''
    FROM
    (
        SELECT user_id, toStartOfHour(timestamp) AS hour, max(end_ms) AS hour_end,
               argMax((job_id, task_id, project_id), rn) AS last
        FROM stage
        GROUP BY user_id, hour
    ) AS h
    INNER JOIN users AS s ON h.user_id = s.user_id
    UNION ALL
    -- the run: how far it got, under which rule, which bucket of a full recompute; or the
    -- failure of the attempt before it (nothing while a back-off is waited out)
    SELECT
        'run', 0, toDateTime(0, 'Etc/UTC'), NULL, NULL, NULL, 0, 0, 0,
        if(action = 'work', run_until, logged),
        if(action = 'work', '[100000, ["change:frame"]]', logged_rule), toUInt8(bucket >= 0),
        (SELECT count() FROM users),
        if(action = 'work', bucket, logged_bucket), if(action = 'work', buckets, logged_buckets),
        if(action = 'work', 0, logged_failures + 1), if(action = 'work', '', last_error)
    WHERE action != 'wait'
)
SETTINGS
    max_memory_usage = 1073741824,
    max_bytes_before_external_group_by = 134217728,
    max_bytes_before_external_sort = 134217728
