-- Which POST / requests `serve` has stored, so that a retried request counts once
-- even when its first try went in with other requests as one insert (group commit,
-- see cvat_analytics/service/ingest.py). One insert carries one deduplication token,
-- so the token of a group lists its requests ("ingest <key> <key> ..."), and this
-- view records them from the events INSERT itself: a request is listed once its rows
-- are stored. Other writers (Vector) send no such token: nothing is recorded for them.
-- Rows are kept 7 days: the window in which a retry is recognised.
CREATE TABLE IF NOT EXISTS `cvat`.ingest_requests
(
    request String,
    inserted_at DateTime64(6, 'Etc/UTC')
)
ENGINE = MergeTree
ORDER BY request
TTL toDateTime(inserted_at) + INTERVAL 7 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS `cvat`.ingest_requests_mv TO `cvat`.ingest_requests AS
SELECT arrayJoin(arrayPopFront(splitByChar(' ', getSetting('insert_deduplication_token')))) AS request,
       now64(6) AS inserted_at
FROM (SELECT 1 FROM `cvat`.events LIMIT 1)
WHERE startsWith(getSetting('insert_deduplication_token'), 'ingest ');
