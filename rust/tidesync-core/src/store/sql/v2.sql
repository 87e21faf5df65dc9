-- Schema version 2: the same tables, with every `CHECK (x IN (...))` of a hot table written as
-- `x = ... OR x = ...`. SQLite evaluates an IN list in a CHECK by building a temporary b-tree of
-- the list on every insert or update of the row: two of them per queued change (op and state),
-- about 30k instructions each time, most of a local create. The allowed values are unchanged.
-- (`sources` keeps its IN checks: it is a parent table, rarely written, and page commits
-- do not touch the checked columns.)

CREATE TABLE changes_v2 (
    seq INTEGER PRIMARY KEY,                 -- queue order (new rows get max + 1)
    source_id INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    object TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op = 'create' OR op = 'update' OR op = 'delete' OR op = 'push'),
    attrs TEXT NOT NULL DEFAULT '{}',        -- update: new values; delete: last values; create: unused
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state = 'pending' OR state = 'in_flight' OR state = 'awaiting_link' OR state = 'sent'
               OR state = 'unknown' OR state = 'deferred' OR state = 'failed'),
    push_id INTEGER,                         -- the push that carried it
    push_pos INTEGER,                        -- its position in that push's section
    retried_unknown INTEGER NOT NULL DEFAULT 0, -- re-sent after an unknown outcome
    error TEXT
);
INSERT INTO changes_v2 SELECT seq, source_id, object, op, attrs, state, push_id, push_pos, retried_unknown, error
    FROM changes;
DROP TABLE changes;
ALTER TABLE changes_v2 RENAME TO changes;
CREATE INDEX changes_by_object ON changes (source_id, object);
CREATE INDEX changes_by_state ON changes (source_id, state);

CREATE TABLE sync_errors_v2 (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    kind TEXT NOT NULL
        CHECK (kind = 'create' OR kind = 'update' OR kind = 'delete' OR kind = 'source' OR kind = 'search'),
    object TEXT,
    message TEXT NOT NULL,
    attrs TEXT NOT NULL DEFAULT '{}',        -- what was sent
    rollback TEXT,                           -- update-rollback: the server's copy
    created_at INTEGER NOT NULL
);
INSERT INTO sync_errors_v2 SELECT id, source_id, kind, object, message, attrs, rollback, created_at FROM sync_errors;
DROP TABLE sync_errors;
ALTER TABLE sync_errors_v2 RENAME TO sync_errors;
CREATE INDEX sync_errors_by_source ON sync_errors (source_id, kind, object);
