-- The pages an access task exported, each sealed, written as the plugin returns them so
-- that a worker holds one page at a time. Keyed by the lease (the fencing token of one
-- run): the task's result names the run whose pages are its records, and the pages of
-- runs that did not succeed are deleted when the task is finished.
CREATE TABLE task_pages (
    lease TEXT NOT NULL,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    page BIGINT NOT NULL,
    records TEXT NOT NULL,
    PRIMARY KEY (lease, page)
);
CREATE INDEX task_pages_task ON task_pages(task_id);
