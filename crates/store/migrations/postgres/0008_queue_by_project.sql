-- Schema version 8: the queue is paged by project (each project's queued
-- rows of a lane in id order), so that projects share the workers fairly.
-- These indexes replace the lanes' indexes by id alone.

DROP INDEX invocations_queued_direct;
DROP INDEX invocations_queued_tasks;
CREATE INDEX invocations_queued_direct ON invocations (project, id) WHERE state = 'queued' AND task_index IS NULL;
CREATE INDEX invocations_queued_tasks ON invocations (project, id) WHERE state = 'queued' AND task_index IS NOT NULL;
