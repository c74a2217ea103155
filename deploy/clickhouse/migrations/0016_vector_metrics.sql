-- Vector's own metrics (vector.yaml: internal_metrics -> the clickhouse_metrics sink), one row
-- per series and scrape: how many events the contract refused (dead letters), a sink dropped
-- (component_discarded_events_total, intentional="false") and ClickHouse answered with an
-- error (http_client_responses_total, http_client_errors_total). Values are Vector's
-- counters since it started; the Monitoring panel adds up their increases. Kept 90 days.
CREATE TABLE IF NOT EXISTS `cvat`.vector_metrics
(
    timestamp DateTime64(3, 'Etc/UTC') CODEC(DoubleDelta, ZSTD(1)),
    host LowCardinality(String),
    name LowCardinality(String),
    component_id LowCardinality(String),
    tags Map(LowCardinality(String), String),
    value Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (name, component_id, host, timestamp)
TTL toDateTime(timestamp) + INTERVAL 90 DAY;
