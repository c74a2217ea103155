-- The refresh step that keeps `cvat`.working_time_totals exact (run in this order by
-- cvat_analytics.working_time.refresh; `-- step:` names each statement).
-- Parameters: {since:DateTime64(6, 'UTC')}, {until:DateTime64(6, 'UTC')} - the insert times of the
-- changes to take; {full:UInt8} - 1 recomputes every user from their first event;
-- {version:UInt64} - this refresh's checkpoint version.

-- step: clear
TRUNCATE TABLE `cvat`.working_time_stage_users;

-- step: clear
TRUNCATE TABLE `cvat`.working_time_stage;

-- step: users
-- Each changed user, the hour to recompute from (the hour of their earliest changed
-- event), and the state carried over from the checkpoint before that hour.
INSERT INTO `cvat`.working_time_stage_users
WITH changed AS
(
    SELECT user_id, toStartOfHour(min(min_ts)) AS from_hour
    FROM
    (
        SELECT user_id, min_ts FROM `cvat`.working_time_changes
        WHERE inserted_at > {since:DateTime64(6, 'UTC')} AND inserted_at <= {until:DateTime64(6, 'UTC')}
        UNION ALL
        SELECT assumeNotNull(user_id), timestamp FROM `cvat`.events
        WHERE {full:UInt8} = 1 AND source = 'client' AND user_id IS NOT NULL
    )
    GROUP BY user_id
)
SELECT
    changed.user_id, changed.from_hour,
    ifNull(carried.has_prev, 0), ifNull(carried.c_end, 0),
    carried.c_job, carried.c_task, carried.c_project
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
) AS carried ON changed.user_id = carried.user_id;

-- step: events
-- The rule over each changed user's events from their from_hour on, with the carried state.
INSERT INTO `cvat`.working_time_stage
SELECT
    user_id, toStartOfHour(timestamp), rn, end_ms, job_id, task_id, project_id,
    toInt64(working_time_ms), credited_job_id, credited_task_id, credited_project_id
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
        FROM (SELECT e.* FROM (SELECT
        assumeNotNull(user_id) AS user_id, timestamp, scope, duration, job_id, task_id, project_id,
        toUnixTimestamp64Milli(timestamp) AS ts,
        ts + if(scope IN ('change:frame'), toInt64(duration), 0) AS end_ms
    FROM
    (
        -- filtered before user_id is renamed to its non-Nullable self
        SELECT user_id, timestamp, scope, duration, job_id, task_id, project_id
        FROM `cvat`.events
        WHERE source = 'client' AND user_id IS NOT NULL AND (user_id IN (SELECT user_id FROM `cvat`.working_time_stage_users)
              AND timestamp >= (SELECT min(from_hour) FROM `cvat`.working_time_stage_users))
    )) AS e
          INNER JOIN `cvat`.working_time_stage_users AS s ON e.user_id = s.user_id
          WHERE e.timestamp >= s.from_hour) AS e
        LEFT JOIN (SELECT user_id, has_prev, c_end, c_job, c_task, c_project
          FROM `cvat`.working_time_stage_users WHERE has_prev = 1) AS c ON e.user_id = c.user_id
        WINDOW
            w_before AS (PARTITION BY e.user_id ORDER BY e.ts, e.end_ms, e.scope, ifNull(e.job_id, 0), ifNull(e.task_id, 0), ifNull(e.project_id, 0)
                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
            w_lag AS (PARTITION BY e.user_id ORDER BY e.ts, e.end_ms, e.scope, ifNull(e.job_id, 0), ifNull(e.task_id, 0), ifNull(e.project_id, 0)
                      ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
    )
);

-- step: totals
-- Insert new-minus-stored per (user, hour >= from_hour, ids): the totals become the
-- recomputed values, and a second run of the same refresh adds nothing.
INSERT INTO `cvat`.working_time_totals (user_id, hour, project_id, task_id, job_id, working_time_ms)
SELECT user_id, hour, project_id, task_id, job_id, sum(ms) AS delta
FROM
(
    SELECT user_id, hour, credited_project_id AS project_id, credited_task_id AS task_id,
           credited_job_id AS job_id, working_time_ms AS ms
    FROM `cvat`.working_time_stage
    UNION ALL
    SELECT t.user_id, t.hour, t.project_id, t.task_id, t.job_id, -t.working_time_ms
    FROM `cvat`.working_time_totals AS t
    INNER JOIN `cvat`.working_time_stage_users AS s ON t.user_id = s.user_id
    WHERE t.hour >= s.from_hour
)
GROUP BY user_id, hour, project_id, task_id, job_id
HAVING delta != 0;

-- step: checkpoints
INSERT INTO `cvat`.working_time_checkpoints
SELECT
    h.user_id, h.hour,
    greatest(if(s.has_prev = 1, s.c_end, 0),
             max(h.hour_end) OVER (PARTITION BY h.user_id ORDER BY h.hour ROWS UNBOUNDED PRECEDING)),
    h.last.1, h.last.2, h.last.3,
    {version:UInt64}
FROM
(
    SELECT user_id, hour, max(end_ms) AS hour_end, argMax((job_id, task_id, project_id), rn) AS last
    FROM `cvat`.working_time_stage
    GROUP BY user_id, hour
) AS h
INNER JOIN `cvat`.working_time_stage_users AS s ON h.user_id = s.user_id;
