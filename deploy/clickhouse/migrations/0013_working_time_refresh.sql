-- reapply: on-change
-- The refreshable view working_time_refresh was created here until its runs carried each
-- user's state at the watermark (0017): it is now created by 0017, after the tables it
-- writes. This drops the view of a store migrated before (applied again because its text
-- changed), so no run of the old view writes into the tables 0017 changes.
DROP VIEW IF EXISTS `cvat`.working_time_refresh;
