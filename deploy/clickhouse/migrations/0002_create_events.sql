-- cvat.events: CVAT's columns, names and order, so CVAT's queries keep working.
-- Sorted by user then time: working time reads each user's stream in order, and
-- per-user panels read one key range. Skip indexes serve per-job and time filters.
-- `request_id` is materialized from payload.request.id so the events of one HTTP
-- request are found without parsing JSON.
CREATE TABLE IF NOT EXISTS `cvat`.events
(
    `scope` LowCardinality(String),
    `obj_name` Nullable(String),
    `obj_id` Nullable(UInt64),
    `obj_val` Nullable(String),
    `source` LowCardinality(String),
    `timestamp` DateTime64(3, 'Etc/UTC') CODEC(DoubleDelta, ZSTD(1)),
    `count` Nullable(UInt16),
    `duration` UInt32 DEFAULT 0,
    `project_id` Nullable(UInt64),
    `task_id` Nullable(UInt64),
    `job_id` Nullable(UInt64),
    `user_id` Nullable(UInt64),
    `user_name` LowCardinality(Nullable(String)),
    `user_email` LowCardinality(Nullable(String)),
    `org_id` Nullable(UInt64),
    `org_slug` LowCardinality(Nullable(String)),
    `payload` Nullable(String) CODEC(ZSTD(3)),
    `access_token_id` Nullable(UInt64),
    `request_id` String MATERIALIZED JSONExtractString(ifNull(payload, ''), 'request', 'id'),
    INDEX idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_timestamp timestamp TYPE minmax GRANULARITY 1,
    INDEX idx_job_id job_id TYPE minmax GRANULARITY 1,
    INDEX idx_task_id task_id TYPE minmax GRANULARITY 1,
    INDEX idx_project_id project_id TYPE minmax GRANULARITY 1,
    INDEX idx_org_id org_id TYPE minmax GRANULARITY 1,
    INDEX idx_scope scope TYPE set(256) GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (user_id, timestamp)
SETTINGS allow_nullable_key = 1, index_granularity = 8192;
