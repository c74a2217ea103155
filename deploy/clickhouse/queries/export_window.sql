-- One window [lo, hi) of the CSV export, formatted by ClickHouse (cvat_analytics.export.writer).
-- Rows in timestamp order, ties broken by every other column, so an export is reproducible.
-- NULL is an empty field and '' is "", so an import restores the same rows.
SELECT `scope`, `obj_name`, `obj_id`, `obj_val`, `source`, `timestamp`, `count`, `duration`, `project_id`, `task_id`, `job_id`, `user_id`, `user_name`, `user_email`, `org_id`, `org_slug`, `payload`, `access_token_id`
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
ORDER BY timestamp, `scope`, `obj_name`, `obj_id`, `obj_val`, `source`, `count`, `duration`, `project_id`, `task_id`, `job_id`, `user_id`, `user_name`, `user_email`, `org_id`, `org_slug`, `payload`, `access_token_id`
SETTINGS format_csv_null_representation = '', output_format_csv_crlf_end_of_line = 0,
    max_threads = 1, max_block_size = 8192, max_bytes_before_external_sort = 16000000
