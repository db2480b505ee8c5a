-- The device's upload journal: every queued file, its asset and each acknowledged part,
-- so that a client killed at any moment resumes where the server left off.

CREATE TABLE files (
    id          INTEGER PRIMARY KEY,
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    state       TEXT NOT NULL,        -- queued | uploading | complete | failed | paused_rejected
    realtime    INTEGER NOT NULL DEFAULT 0,
    asset_id    TEXT,
    part_count  INTEGER,
    part_size   INTEGER,
    error       TEXT,
    queued_at   INTEGER NOT NULL,
    finished_at INTEGER,
    UNIQUE (path, size, mtime_ns)
);
CREATE INDEX files_state ON files (state);

-- Parts: planned ones once acknowledged; real-time ones once registered with the server.
CREATE TABLE parts (
    file_id  INTEGER NOT NULL REFERENCES files (id),
    number   INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    is_final INTEGER NOT NULL DEFAULT 0,
    acked    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (file_id, number)
);
