-- Runs of a task whose worker stopped before finishing (a crash, a kill, a lost lease
-- taken over) are counted apart from the runs that ended: they are retried with backoff
-- and never count against max_attempts, since the system may have done the work.
ALTER TABLE tasks ADD COLUMN interrupted BIGINT NOT NULL DEFAULT 0;
