-- Review cycles (docs/productivity.md), per job. `per` (job, annotator, reviewer) is
-- chosen by code; every value is bound. Each job's figures (productivity.jinja's
-- job_figures: rejections, time in each stage, first decision, reviewer, annotator) use all
-- its events, whatever the range; the range picks the jobs with review or annotation
-- events in it (kept by the engine's refresh in productivity_jobs).
SELECT job_id, task_id, project_id, org_id, rejections, annotation_ms, validation_ms, acceptance_ms,
       current_stage, fromUnixTimestamp64Milli(current_since_ms, 'UTC') AS current_since,
       annotation_to_acceptance_ms, first_pass, reviewer, annotator
FROM (SELECT *, arrayExists(d -> d BETWEEN {from_day:Date} AND {to_day:Date}, days) AS in_range
FROM (SELECT job_id, org_id, project_id, task_id, rejections, annotation_ms, validation_ms, acceptance_ms, current_stage,
        current_since_ms, annotation_to_acceptance_ms, decided_ms, first_pass, reviewer, annotator, days
 FROM `cvat`.productivity_jobs FINAL
 WHERE ({org_id:Nullable(UInt64)} IS NULL OR org_id = {org_id:Nullable(UInt64)}) AND ({project_id:Nullable(UInt64)} IS NULL OR project_id = {project_id:Nullable(UInt64)}) AND ({task_id:Nullable(UInt64)} IS NULL OR task_id = {task_id:Nullable(UInt64)}) AND ({job_id:Nullable(UInt64)} IS NULL OR job_id = {job_id:Nullable(UInt64)}))
)
WHERE in_range
ORDER BY job_id
