-- What an erasure task found before it changed anything, and what its erase calls
-- reported, each sealed and kept across the task's runs: a rerun after a crash checks
-- the records the first run located against every report since, not only its own.
-- `found` counts the records a run located, exported or changed (not personal data),
-- so that a request in which no system found anything says so. `unapplied` lists the
-- positions of a rectification's changes that the system has no place for (JSON), so
-- that the request fails when a change was applied nowhere.
ALTER TABLE tasks ADD COLUMN located TEXT;
ALTER TABLE tasks ADD COLUMN erased TEXT;
ALTER TABLE tasks ADD COLUMN found BIGINT;
ALTER TABLE tasks ADD COLUMN unapplied TEXT;
