-- Schema version 3: blob attributes. A released step is never edited: add a migration instead.

-- Blob downloads a page asked for (its attribute was set to a URL), recorded in the page's
-- transaction and done after it; the value becomes the local path only if it still holds `url`.
CREATE TABLE blob_downloads (
    source_id INTEGER NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    object TEXT NOT NULL,
    attr TEXT NOT NULL,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,     -- failed tries; given up at 10 until a new URL
    last_error TEXT,
    PRIMARY KEY (source_id, object, attr)
) WITHOUT ROWID;
