-- reapply: on-change
-- Spec values that may change after the table exists: applied again whenever the
-- spec changes them. Retention drops whole parts (never rewrites them); the
-- deduplication window makes a retried identical insert count once.
-- On CVAT's own table, adopted in CVAT's stack, `migrate` renders this with
-- cvat_stack.adopted_retention_days (0 = no TTL, as CVAT keeps events for ever), and it
-- refuses a TTL that would drop stored events unless --yes (cvat_analytics/retention.py).
ALTER TABLE `cvat`.events MODIFY TTL toDateTime(timestamp) + toIntervalDay(365);

ALTER TABLE `cvat`.events MODIFY SETTING
    ttl_only_drop_parts = 1,
    non_replicated_deduplication_window = 1000;
