-- Per-event working time of every client event of every user, with the chosen
-- engine (the view <db>.working_time_events is this with the SQL engine).
SELECT
    user_id, timestamp, ts, end_ms, scope, duration, job_id, task_id, project_id,
    toInt64(working_time_ms) AS working_time_ms,
    credited_job_id, credited_task_id, credited_project_id
FROM
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
        FROM (SELECT
        assumeNotNull(user_id) AS user_id, timestamp, scope, duration, job_id, task_id, project_id,
        toUnixTimestamp64Milli(timestamp) AS ts,
        ts + if(scope IN ('change:frame'), toInt64(duration), 0) AS end_ms
    FROM
    (
        -- filtered before user_id is renamed to its non-Nullable self
        SELECT user_id, timestamp, scope, duration, job_id, task_id, project_id
        FROM `cvat`.events
        WHERE source = 'client' AND user_id IS NOT NULL AND (1)
    )) AS e
        LEFT JOIN (SELECT toUInt64(0) AS user_id, toUInt8(0) AS has_prev, toInt64(0) AS c_end,
           CAST(NULL, 'Nullable(UInt64)') AS c_job, CAST(NULL, 'Nullable(UInt64)') AS c_task,
           CAST(NULL, 'Nullable(UInt64)') AS c_project
    WHERE 0) AS c ON e.user_id = c.user_id
        WINDOW
            w_before AS (PARTITION BY e.user_id ORDER BY e.ts, e.end_ms, e.scope, ifNull(e.job_id, 0), ifNull(e.task_id, 0), ifNull(e.project_id, 0)
                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
            w_lag AS (PARTITION BY e.user_id ORDER BY e.ts, e.end_ms, e.scope, ifNull(e.job_id, 0), ifNull(e.task_id, 0), ifNull(e.project_id, 0)
                      ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
    )
)
ORDER BY user_id, ts, end_ms, scope, ifNull(job_id, 0), ifNull(task_id, 0), ifNull(project_id, 0)
