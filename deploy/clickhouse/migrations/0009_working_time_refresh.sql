-- reapply: on-change
-- The refreshable view working_time_refresh was created here until its changes came from
-- events.inserted_at, which 0012 adds: it is now created by 0013, after that column exists.
-- This drops the view of a store migrated before (applied again because its text changed),
-- so no refresh runs while 0012 changes the events table.
DROP VIEW IF EXISTS `cvat`.working_time_refresh;
