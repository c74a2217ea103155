-- Objects per day (UTC) and shape type (docs/productivity.md): the `count` of CVAT's
-- create/update/delete:tags|shapes|tracks server events; tags have no shape type, a track's
-- is its shape's with " track". Every value is bound.
SELECT
    day,
    if(endsWith(scope, ':tags'), 'tag', concat(ifNull(obj_name, '?'), if(endsWith(scope, ':tracks'), ' track', ''))) AS shape,
    toInt64(sumIf(objects, startsWith(scope, 'create:'))) AS created,
    toInt64(sumIf(objects, startsWith(scope, 'update:'))) AS updated,
    toInt64(sumIf(objects, startsWith(scope, 'delete:'))) AS deleted
FROM (SELECT user_id, day, org_id, project_id, task_id, job_id, scope, obj_name, objects, track_shapes
 FROM `cvat`.productivity_objects FINAL
 WHERE day BETWEEN {from_day:Date} AND {to_day:Date} AND ({org_id:Nullable(UInt64)} IS NULL OR org_id = {org_id:Nullable(UInt64)}) AND ({project_id:Nullable(UInt64)} IS NULL OR project_id = {project_id:Nullable(UInt64)}) AND ({task_id:Nullable(UInt64)} IS NULL OR task_id = {task_id:Nullable(UInt64)}) AND ({job_id:Nullable(UInt64)} IS NULL OR job_id = {job_id:Nullable(UInt64)}) AND ({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)}))
GROUP BY day, shape
ORDER BY day, shape
