-- Telling the subject, where the controller wants it: which events are told (a JSON
-- array) and the controller's own wording of each (a JSON object, event → {subject,
-- body}); no row: the subject is told nothing.
CREATE TABLE subject_notices (
    controller_id TEXT PRIMARY KEY REFERENCES controllers(id),
    events TEXT NOT NULL,
    templates TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
