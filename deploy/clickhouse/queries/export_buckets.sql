-- Rows of the export per hour in [lo, hi): the CSV export plans its windows from
-- these counts (cvat_analytics.export.writer). `unit` is Hour or Minute, chosen by code.
SELECT toUnixTimestamp(toStartOfHour(timestamp)) AS bucket, count() AS n
FROM `cvat`.events
WHERE     source IN ('server', 'client')
    AND scope != 'send:exception'
    AND timestamp >= {from:DateTime64(3, 'Etc/UTC')}
    AND timestamp <= {to:DateTime64(3, 'Etc/UTC')}
    AND ({org_id:Nullable(UInt64)} IS NULL OR org_id = {org_id:Nullable(UInt64)})
    AND ({project_id:Nullable(UInt64)} IS NULL OR project_id = {project_id:Nullable(UInt64)})
    AND ({task_id:Nullable(UInt64)} IS NULL OR task_id = {task_id:Nullable(UInt64)})
    AND ({job_id:Nullable(UInt64)} IS NULL OR job_id = {job_id:Nullable(UInt64)})
    AND ({user_id:Nullable(UInt64)} IS NULL OR user_id = {user_id:Nullable(UInt64)})
    AND timestamp >= {lo:DateTime64(3, 'Etc/UTC')}
    AND timestamp < {hi:DateTime64(3, 'Etc/UTC')}
GROUP BY bucket
ORDER BY bucket
