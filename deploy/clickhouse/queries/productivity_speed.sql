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
        user_id, day,
assumeNotNull(job_id) AS key,
        if(startsWith(scope, 'create:'), objects, 0) AS n_created,
        if(startsWith(scope, 'update:'), objects, 0) AS n_updated,
        if(startsWith(scope, 'delete:'), objects, 0) AS n_deleted,
        track_shapes AS n_track_shapes,
        toInt64(0) AS ms
    FROM (SELECT user_id, day, org_id, project_id, task_id, job_id, scope, obj_name, objects, track_shapes
 FROM `cvat`.productivity_objects FINAL
 WHERE day BETWEEN {from_day:Date} AND {to_day:Date} AND ({org_id:Nullable(UInt64)} IS NULL OR org_id = {org_id:Nullable(UInt64)}) AND ({project_id:Nullable(UInt64)} IS NULL OR project_id = {project_id:Nullable(UInt64)}) AND ({task_id:Nullable(UInt64)} IS NULL OR task_id = {task_id:Nullable(UInt64)}) AND ({job_id:Nullable(UInt64)} IS NULL OR job_id = {job_id:Nullable(UInt64)}) AND ({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)}))
WHERE job_id IS NOT NULL
    UNION ALL
    SELECT user_id, day,
assumeNotNull(job_id) AS key,
           0, 0, 0, 0, ms
    FROM (SELECT w.user_id AS user_id, toDate(w.hour) AS day, o.job_org_id AS org_id, w.project_id AS project_id,
       w.task_id AS task_id, w.job_id AS job_id, w.working_time_ms AS ms
FROM `cvat`.working_time_totals AS w
LEFT JOIN (SELECT job_id, org_id AS job_org_id
FROM `cvat`.productivity_jobs FINAL
WHERE org_id IS NOT NULL) AS o ON o.job_id = w.job_id
WHERE toDate(w.hour) BETWEEN {from_day:Date} AND {to_day:Date})
    WHERE job_id IS NOT NULL      AND ({org_id:Nullable(UInt64)} IS NULL OR org_id = {org_id:Nullable(UInt64)}) AND ({project_id:Nullable(UInt64)} IS NULL OR project_id = {project_id:Nullable(UInt64)}) AND ({task_id:Nullable(UInt64)} IS NULL OR task_id = {task_id:Nullable(UInt64)}) AND ({job_id:Nullable(UInt64)} IS NULL OR job_id = {job_id:Nullable(UInt64)}) AND ({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)})
)
GROUP BY user_id, day, key
ORDER BY day, user_id, job_id
