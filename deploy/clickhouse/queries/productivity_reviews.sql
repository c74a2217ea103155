-- Review cycles (docs/productivity.md), per job. `per` (job, annotator, reviewer) is
-- chosen by code; every value is bound. From CVAT's update:job events (one per changed
-- field: obj_name state or stage, obj_val the new value, payload.old_value the old one),
-- create:job and the create:tags|shapes|tracks events. Each job's figures use all its
-- events, whatever the range; the range picks the jobs.
--   rejections        update:job state -> rejected
--   *_ms              time in each stage: from each stage change (or create:job) to the
--                     next one; the current stage's time runs on (current_stage, _since)
--   first annotation  its first create:tags|shapes|tracks; accepted: first stage -> acceptance
--   first decision    the first state -> rejected or stage -> acceptance (at one instant, the
--                     rejection first); its user is the reviewer, and the job passed first
--                     time if it was an acceptance
--   annotator         the user who created most of the job's objects before that decision
--                     (the lowest id on a tie), from the same pass over the events
SELECT job_id, task_id, project_id, org_id, rejections, annotation_ms, validation_ms, acceptance_ms,
       current_stage, fromUnixTimestamp64Milli(current_since_ms, 'UTC') AS current_since,
       annotation_to_acceptance_ms, first_pass, reviewer, annotator
FROM (SELECT
    job_id, j_org AS org_id, j_project AS project_id, j_task AS task_id, rejections, first_annotation_ms, accepted_ms,
    stages, arrayMap(i -> (stages[i].2, stages[i + 1].1 - stages[i].1), range(1, length(stages))) AS segments,
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
    in_range
FROM
(
    SELECT
        assumeNotNull(job_id) AS job_id,
        anyLast(org_id) AS j_org, anyLast(project_id) AS j_project, anyLast(task_id) AS j_task,
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
        max(toDate(timestamp) BETWEEN {from_day:Date} AND {to_day:Date}) AS in_range
    FROM
    (
        -- two disjoint reads: only a stage change's payload is read (the annotation events'
        -- payloads are most of the bytes, and no figure needs them)
        SELECT job_id, org_id, project_id, task_id, timestamp, scope, obj_name, obj_val, user_id, count, '' AS old_value
        FROM `cvat`.events
        WHERE source = 'server' AND job_id IS NOT NULL
          AND (scope = 'create:job' OR scope IN ('create:tags', 'create:shapes', 'create:tracks') OR (scope = 'update:job' AND obj_name = 'state'))
          AND ({org_id:Nullable(UInt64)} IS NULL OR org_id = {org_id:Nullable(UInt64)}) AND ({project_id:Nullable(UInt64)} IS NULL OR project_id = {project_id:Nullable(UInt64)}) AND ({task_id:Nullable(UInt64)} IS NULL OR task_id = {task_id:Nullable(UInt64)}) AND ({job_id:Nullable(UInt64)} IS NULL OR job_id = {job_id:Nullable(UInt64)})
        UNION ALL
        SELECT job_id, org_id, project_id, task_id, timestamp, scope, obj_name, obj_val, user_id, count,
               JSONExtractString(ifNull(payload, ''), 'old_value')
        FROM `cvat`.events
        WHERE source = 'server' AND job_id IS NOT NULL AND (scope = 'update:job' AND obj_name = 'stage')
          AND ({org_id:Nullable(UInt64)} IS NULL OR org_id = {org_id:Nullable(UInt64)}) AND ({project_id:Nullable(UInt64)} IS NULL OR project_id = {project_id:Nullable(UInt64)}) AND ({task_id:Nullable(UInt64)} IS NULL OR task_id = {task_id:Nullable(UInt64)}) AND ({job_id:Nullable(UInt64)} IS NULL OR job_id = {job_id:Nullable(UInt64)})
    )
    GROUP BY job_id
)
)
WHERE in_range
ORDER BY job_id
