-- Retention rules: a controller's standing instruction to erase, in one of its systems,
-- the subjects whose retention period under a rule of the system's connector has run
-- out (the contract's `expired`), checked every `every_minutes` while enabled.
CREATE TABLE retention_rules (
    id TEXT PRIMARY KEY,
    controller_id TEXT NOT NULL REFERENCES controllers(id),
    system_id TEXT NOT NULL REFERENCES systems(id),
    rule TEXT NOT NULL,
    every_minutes INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    next_run_at INTEGER NOT NULL,
    last_run_at INTEGER,
    last_subjects INTEGER,
    last_filed INTEGER,
    last_error TEXT,
    UNIQUE (system_id, rule)
);

-- A request that concerns one system only (filed by a retention rule of that system):
-- its tasks are queued there, not in every system of the controller.
ALTER TABLE requests ADD COLUMN system_id TEXT REFERENCES systems(id);
