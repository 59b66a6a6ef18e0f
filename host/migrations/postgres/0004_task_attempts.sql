-- Every run of a task: which worker ran it under which lease, when it started, when its
-- lease was last renewed, and how it ended (NULL while it runs, or when its worker died).
CREATE TABLE task_attempts (
    lease TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    attempt BIGINT NOT NULL,
    worker TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    renewed_at BIGINT NOT NULL,
    finished_at BIGINT,
    outcome TEXT
);
CREATE INDEX task_attempts_task ON task_attempts(task_id, started_at);
