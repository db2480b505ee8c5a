-- The Rushes schema, the same for SQLite and PostgreSQL: portable on purpose (TEXT, BIGINT,
-- no booleans, timestamps as milliseconds since the epoch), so one migration folder serves both.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,        -- argon2id PHC string
    created_at    BIGINT NOT NULL
);

CREATE TABLE projects (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    dir        TEXT NOT NULL UNIQUE,    -- folder under the media store, fixed at creation
    created_at BIGINT NOT NULL
);

-- A device model is known by the client_secret baked into its firmware (not a secret).
CREATE TABLE device_models (
    id            TEXT PRIMARY KEY,
    client_secret TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    registered    BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL
);

-- One physical unit, known by its client_id (serial number or persistent UUID).
CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL UNIQUE,
    model_id       TEXT NOT NULL REFERENCES device_models (id),
    name           TEXT NOT NULL,
    project_id     TEXT REFERENCES projects (id),   -- NULL until paired
    client_version TEXT NOT NULL,
    last_seen_at   BIGINT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- While a window is open (ended_at NULL) the device, or one channel of it, is paused;
-- closed windows stay, so a clip recorded during a pause is refused even when it is sent
-- after the pause ended.
CREATE TABLE pause_windows (
    id         TEXT PRIMARY KEY,
    device_id  TEXT NOT NULL REFERENCES devices (id),
    channel    BIGINT,                  -- NULL: every channel
    started_at BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE INDEX pause_windows_device ON pause_windows (device_id);

CREATE TABLE device_codes (
    id               TEXT PRIMARY KEY,
    device_code_hash TEXT NOT NULL UNIQUE,
    user_code        TEXT NOT NULL,
    device_id        TEXT NOT NULL REFERENCES devices (id),
    scopes           TEXT NOT NULL,
    state            TEXT NOT NULL,      -- pending | approved | denied | used
    project_id       TEXT REFERENCES projects (id),
    interval_secs    BIGINT NOT NULL,
    last_poll_at     BIGINT,
    expires_at       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX device_codes_user_code ON device_codes (user_code);

-- What a user approved: this device may act on this project with these scopes.
CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    device_id  TEXT NOT NULL REFERENCES devices (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    scopes     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX grants_device ON grants (device_id);

-- Each token response is one pair; a refresh retires the pair it came from.
CREATE TABLE token_pairs (
    id                 TEXT PRIMARY KEY,
    grant_id           TEXT NOT NULL REFERENCES grants (id),
    access_hash        TEXT NOT NULL UNIQUE,
    refresh_hash       TEXT UNIQUE,
    access_expires_at  BIGINT NOT NULL,
    refresh_expires_at BIGINT,
    created_at         BIGINT NOT NULL,
    retired_at         BIGINT
);
CREATE INDEX token_pairs_grant ON token_pairs (grant_id);

CREATE TABLE assets (
    id              TEXT PRIMARY KEY,
    project_id      TEXT NOT NULL REFERENCES projects (id),
    device_id       TEXT NOT NULL REFERENCES devices (id),
    name            TEXT NOT NULL,
    path            TEXT NOT NULL,       -- inside the project: Cloud Devices/date/TYPE/device/name
    filetype        TEXT NOT NULL,
    filesize        BIGINT,              -- NULL while a real-time upload has no final part
    channel         BIGINT NOT NULL,
    offset_secs     BIGINT NOT NULL,
    recorded_at     BIGINT NOT NULL,
    realtime        BIGINT NOT NULL,
    auto_version_id TEXT,
    part_size       BIGINT,              -- planned uploads only
    part_count      BIGINT,
    state           TEXT NOT NULL,       -- uploading | complete
    sha256          TEXT,
    created_at      BIGINT NOT NULL,
    completed_at    BIGINT,
    UNIQUE (project_id, path)
);
CREATE INDEX assets_device ON assets (device_id);
CREATE INDEX assets_state ON assets (state);

-- Planned parts are inserted when the asset is created, real-time parts when registered.
CREATE TABLE parts (
    asset_id    TEXT NOT NULL REFERENCES assets (id),
    number      BIGINT NOT NULL,
    size        BIGINT NOT NULL,
    is_final    BIGINT NOT NULL DEFAULT 0,
    stored_as   TEXT,                    -- the media store's name for the bytes, once received
    received_at BIGINT,
    PRIMARY KEY (asset_id, number)
);
