-- Timesheet (docs/productivity.md): working time per user and day, from
-- working_time_totals (CVAT's rule, kept exact by the engine's refresh). `by_project` is
-- chosen by code; every value is bound. The org filter keeps the time credited to the
-- organisation's jobs (time with no job has no organisation). The user name is the last
-- one the user's events carry in the range. {limit:UInt64} bounds the rows (the caller asks
-- for one more than it allows, to know when a timesheet is cut).
SELECT
    t.user_id AS user_id,
    ifNull(u.last_name, '') AS user_name,
    t.day AS day,
toInt64(sum(t.ms)) AS working_time_ms,
    round(sum(t.ms) / 3600000, 2) AS hours
FROM
(
    SELECT user_id, day, project_id, toInt64(ms) AS ms, toInt64(0) AS capped_ms
    FROM (SELECT w.user_id AS user_id, toDate(w.hour) AS day, o.job_org_id AS org_id, w.project_id AS project_id,
       w.task_id AS task_id, w.job_id AS job_id, w.working_time_ms AS ms
FROM `cvat`.working_time_totals AS w
LEFT JOIN (SELECT job_id, org_id AS job_org_id
FROM `cvat`.productivity_jobs FINAL
WHERE org_id IS NOT NULL) AS o ON o.job_id = w.job_id
WHERE toDate(w.hour) BETWEEN {from_day:Date} AND {to_day:Date})
    WHERE ({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)}) AND ({org_id:Nullable(UInt64)} IS NULL OR org_id = {org_id:Nullable(UInt64)}) AND ({project_id:Nullable(UInt64)} IS NULL OR project_id = {project_id:Nullable(UInt64)})
) AS t
LEFT JOIN
(
    SELECT user_id, argMaxMerge(last_name) AS last_name
    FROM `cvat`.productivity_user_names
    WHERE day BETWEEN {from_day:Date} AND {to_day:Date} AND ({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)})
    GROUP BY user_id
) AS u ON u.user_id = t.user_id
GROUP BY t.user_id, user_name, t.day
HAVING working_time_ms != 0
ORDER BY t.day, t.user_id
LIMIT {limit:UInt64}
