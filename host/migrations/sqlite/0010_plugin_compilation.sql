-- An uploaded plugin is stored first and compiled in the background: `compiling` (since
-- `compiling_since`) until its component is compiled and has described itself
-- (`ready`), or `failed` with why. Rows from before are ready.
ALTER TABLE plugins ADD COLUMN status TEXT NOT NULL DEFAULT 'ready';
ALTER TABLE plugins ADD COLUMN error TEXT;
ALTER TABLE plugins ADD COLUMN compiling_since INTEGER;
