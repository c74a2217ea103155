-- The number of stored events, for GET /health: a metadata read on MergeTree.
SELECT count() FROM `cvat`.events
