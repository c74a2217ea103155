-- Durability: an insert is acknowledged (Vector's end-to-end acknowledgement, serve's
-- 200) only after ClickHouse returned, and with these settings ClickHouse returns
-- only after the new part's files and its directory are on disk, so an acknowledged
-- event survives a kill -9 of the server and a power loss, not only a clean stop.
ALTER TABLE `cvat`.events MODIFY SETTING
    fsync_after_insert = 1,
    fsync_part_directory = 1;
