-- CVAT's original cvat.events (reference/cvat.md §3), the benchmark's baseline:
-- plain String / Nullable types, no LowCardinality, no codecs, no skip indexes,
-- sorted by timestamp only.
CREATE TABLE IF NOT EXISTS `{{ db }}`.events
(
    `scope` String,
    `obj_name` Nullable(String),
    `obj_id` Nullable(UInt64),
    `obj_val` Nullable(String),
    `source` String,
    `timestamp` DateTime64(3, 'Etc/UTC'),
    `count` Nullable(UInt16),
    `duration` UInt32 DEFAULT toUInt32(0),
    `project_id` Nullable(UInt64),
    `task_id` Nullable(UInt64),
    `job_id` Nullable(UInt64),
    `user_id` Nullable(UInt64),
    `user_name` Nullable(String),
    `user_email` Nullable(String),
    `org_id` Nullable(UInt64),
    `org_slug` Nullable(String),
    `payload` Nullable(String),
    `access_token_id` Nullable(UInt64) DEFAULT NULL
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (timestamp)
SETTINGS index_granularity = 8192
