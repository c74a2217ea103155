-- 1 when the engine has the executable UDF working_time_ms loaded
SELECT count() > 0 FROM system.functions WHERE name = 'working_time_ms';
