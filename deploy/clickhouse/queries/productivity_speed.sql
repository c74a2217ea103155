-- Annotation speed per user, job and day (docs/productivity.md): the objects a user
-- created, changed and deleted (the `count` of CVAT's create/update/delete:tags|shapes|tracks
-- server events), the visible shapes of tracks as CVAT's diff gives them, the user's working
-- time credited to the same job that day (working_time_totals), and objects per
-- working hour. `level` (job, task, project, org) is chosen by code; every value is bound.
-- A job outside every organisation counts under org_id 0 at the org level.
SELECT
    user_id,
    day,
    key AS job_id,
    toInt64(sum(n_created)) AS created,
    toInt64(sum(n_updated)) AS updated,
    toInt64(sum(n_deleted)) AS deleted,
    created - deleted AS net,
    toInt64(sum(n_track_shapes)) AS track_shapes_diff,
    toInt64(sum(ms)) AS working_time_ms,
    if(working_time_ms > 0, (created + updated + deleted) * 3600000 / working_time_ms, NULL) AS objects_per_hour
FROM
(
    SELECT
        assumeNotNull(user_id) AS user_id,
        toDate(timestamp) AS day,
assumeNotNull(job_id) AS key,
        if(startsWith(scope, 'create:'), toInt64(ifNull(count, 0)), 0) AS n_created,
        if(startsWith(scope, 'update:'), toInt64(ifNull(count, 0)), 0) AS n_updated,
        if(startsWith(scope, 'delete:'), toInt64(ifNull(count, 0)), 0) AS n_deleted,
        if(endsWith(scope, ':tracks'),
           arraySum(arrayMap(t -> JSONExtractInt(t, 'visible_shapes_count_diff'), JSONExtractArrayRaw(ifNull(payload, ''), 'tracks'))),
           0) AS n_track_shapes,
        toInt64(0) AS ms
    FROM `cvat`.events
    WHERE scope IN ('create:tags', 'create:shapes', 'create:tracks', 'update:tags', 'update:shapes', 'update:tracks', 'delete:tags', 'delete:shapes', 'delete:tracks') AND source = 'server' AND user_id IS NOT NULL
AND job_id IS NOT NULL      AND toDate(timestamp) BETWEEN {from_day:Date} AND {to_day:Date}
      AND ({org_id:Nullable(UInt64)} IS NULL OR org_id = {org_id:Nullable(UInt64)}) AND ({project_id:Nullable(UInt64)} IS NULL OR project_id = {project_id:Nullable(UInt64)}) AND ({task_id:Nullable(UInt64)} IS NULL OR task_id = {task_id:Nullable(UInt64)}) AND ({job_id:Nullable(UInt64)} IS NULL OR job_id = {job_id:Nullable(UInt64)}) AND ({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)})
    UNION ALL
    SELECT user_id, day,
assumeNotNull(job_id) AS key,
           0, 0, 0, 0, ms
    FROM (SELECT w.user_id AS user_id, toDate(w.hour) AS day, o.job_org_id AS org_id, w.project_id AS project_id,
       w.task_id AS task_id, w.job_id AS job_id, w.working_time_ms AS ms
FROM `cvat`.working_time_totals AS w
LEFT JOIN (SELECT assumeNotNull(job_id) AS job_id, argMax(org_id, timestamp) AS job_org_id
FROM `cvat`.events
WHERE source = 'server' AND job_id IS NOT NULL AND org_id IS NOT NULL
GROUP BY job_id) AS o ON o.job_id = w.job_id
WHERE toDate(w.hour) BETWEEN {from_day:Date} AND {to_day:Date})
    WHERE job_id IS NOT NULL      AND ({org_id:Nullable(UInt64)} IS NULL OR org_id = {org_id:Nullable(UInt64)}) AND ({project_id:Nullable(UInt64)} IS NULL OR project_id = {project_id:Nullable(UInt64)}) AND ({task_id:Nullable(UInt64)} IS NULL OR task_id = {task_id:Nullable(UInt64)}) AND ({job_id:Nullable(UInt64)} IS NULL OR job_id = {job_id:Nullable(UInt64)}) AND ({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)})
)
GROUP BY user_id, day, key
ORDER BY day, user_id, job_id
