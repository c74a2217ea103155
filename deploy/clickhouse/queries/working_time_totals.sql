-- Working-time totals at query time, exact at the moment it runs (`cvat-analytics
-- working-time`). Time counted at events with {from_ts} <= timestamp < {to_ts};
-- the user's events before {from_ts} decide the first gap (carried state).
-- The id filters select the credited (job, task, project), after the rule ran over
-- the user's whole stream. Every value is a bound parameter; NULL = no filter.
SELECT user_id, project_id, task_id, job_id, toInt64(sum(ms)) AS working_time_ms
FROM
(
    SELECT
        user_id,
        credited_project_id AS project_id,
        credited_task_id AS task_id,
        credited_job_id AS job_id,
        toDate(timestamp) AS day,
        toStartOfHour(timestamp) AS hour,
        working_time_ms AS ms
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
            WHERE source = 'client' AND user_id IS NOT NULL AND (({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)})
                      AND timestamp >= {from_ts:DateTime64(3, 'UTC')} AND timestamp < {to_ts:DateTime64(3, 'UTC')})
        )) AS e
            LEFT JOIN (SELECT user_id, toUInt8(1) AS has_prev, max(end_ms) AS c_end,
                      argMax((job_id, task_id, project_id), (ts, end_ms, scope, ifNull(job_id, 0), ifNull(task_id, 0), ifNull(project_id, 0))) AS last,
                      last.1 AS c_job, last.2 AS c_task, last.3 AS c_project
               FROM (SELECT
            assumeNotNull(user_id) AS user_id, timestamp, scope, duration, job_id, task_id, project_id,
            toUnixTimestamp64Milli(timestamp) AS ts,
            ts + if(scope IN ('change:frame'), toInt64(duration), 0) AS end_ms
        FROM
        (
            -- filtered before user_id is renamed to its non-Nullable self
            SELECT user_id, timestamp, scope, duration, job_id, task_id, project_id
            FROM `cvat`.events
            WHERE source = 'client' AND user_id IS NOT NULL AND (({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)})
                      AND timestamp < {from_ts:DateTime64(3, 'UTC')})
        ))
               GROUP BY user_id) AS c ON e.user_id = c.user_id
            WINDOW
                w_before AS (PARTITION BY e.user_id ORDER BY e.ts, e.end_ms, e.scope, ifNull(e.job_id, 0), ifNull(e.task_id, 0), ifNull(e.project_id, 0)
                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                w_lag AS (PARTITION BY e.user_id ORDER BY e.ts, e.end_ms, e.scope, ifNull(e.job_id, 0), ifNull(e.task_id, 0), ifNull(e.project_id, 0)
                          ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
        )
    )
    WHERE ({project_id:Nullable(UInt64)} IS NULL OR credited_project_id = {project_id:Nullable(UInt64)})
      AND ({task_id:Nullable(UInt64)} IS NULL OR credited_task_id = {task_id:Nullable(UInt64)})
      AND ({job_id:Nullable(UInt64)} IS NULL OR credited_job_id = {job_id:Nullable(UInt64)})
)
GROUP BY user_id, project_id, task_id, job_id
HAVING working_time_ms != 0
ORDER BY user_id, project_id, task_id, job_id
