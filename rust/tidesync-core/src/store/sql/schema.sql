-- TideSync store, schema version 1. A released step is never edited: add a migration instead.

CREATE TABLE client_info (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    client_id TEXT,                          -- RhoConnect client id (32 hex), NULL until created
    session TEXT,                            -- session cookie `name=value`, byte for byte; NULL = logged out
    user_name TEXT,                          -- last login name
    reset_pending INTEGER NOT NULL DEFAULT 0 -- 1: send clientreset before the next sync
);
INSERT INTO client_info (id) VALUES (1);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE sources (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL DEFAULT 1000,
    partition TEXT NOT NULL DEFAULT 'user' CHECK (partition IN ('user', 'app', 'local')),
    sync INTEGER NOT NULL DEFAULT 1,         -- 0: local only, no change queue
    kind TEXT NOT NULL DEFAULT 'bag' CHECK (kind IN ('bag', 'fixed')),
    definition TEXT NOT NULL DEFAULT '{}',   -- JSON: columns, blob attributes, belongs_to
    token TEXT NOT NULL DEFAULT '',          -- pending page token; '' = no page pending
    search_token TEXT NOT NULL DEFAULT '',   -- kept apart from `token` (spec H9)
    server_total INTEGER,                    -- last page's total_count
    metadata TEXT,
    last_sync_at INTEGER,                    -- unix ms
    last_sync_ok INTEGER,
    last_error TEXT
);

-- Property-bag objects: one row per object, attributes as a JSON object of strings.
CREATE TABLE objects (
    source_id INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    attrs TEXT NOT NULL,
    PRIMARY KEY (source_id, id)
);

-- The outbound change queue (spec §5.4, §8.5 with explicit state names).
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY,                 -- queue order (new rows get max + 1)
    source_id INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    object TEXT NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete', 'push')),
    attrs TEXT NOT NULL DEFAULT '{}',        -- update: new values; delete: last values; create: unused
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'in_flight', 'awaiting_link', 'sent', 'unknown', 'deferred', 'failed')),
    push_id INTEGER,                         -- the push that carried it
    push_pos INTEGER,                        -- its position in that push's section
    retried_unknown INTEGER NOT NULL DEFAULT 0, -- re-sent after an unknown outcome
    error TEXT
);
CREATE INDEX changes_by_object ON changes (source_id, object);
CREATE INDEX changes_by_state ON changes (source_id, state);

-- Temporary id -> server id, kept so that late references can still be resolved.
CREATE TABLE id_map (
    source_id INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    temp_id TEXT NOT NULL,
    server_id TEXT NOT NULL,
    PRIMARY KEY (source_id, temp_id)
) WITHOUT ROWID;

-- Errors reported by the server, per source and object, until the app resolves them.
CREATE TABLE sync_errors (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('create', 'update', 'delete', 'source', 'search')),
    object TEXT,
    message TEXT NOT NULL,
    attrs TEXT NOT NULL DEFAULT '{}',        -- what was sent
    rollback TEXT,                           -- update-rollback: the server's copy
    created_at INTEGER NOT NULL
);
CREATE INDEX sync_errors_by_source ON sync_errors (source_id, kind, object);
