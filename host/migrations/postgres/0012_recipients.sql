-- The recipients a controller disclosed personal data to (Art. 19): each is told, by a
-- signed webhook of its own, when an erasure or a rectification it may hold data of
-- completes. Removed recipients are kept, so that past notices still name them.
CREATE TABLE recipients (
    id TEXT PRIMARY KEY,
    controller_id TEXT NOT NULL REFERENCES controllers(id),
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    removed_at BIGINT
);
CREATE INDEX recipients_controller ON recipients(controller_id);

-- A delivery to a recipient rather than to the controller's own webhook.
ALTER TABLE webhook_deliveries ADD COLUMN recipient_id TEXT REFERENCES recipients(id);
