-- Channels, comments and markers (c2c-api.md §5). Portable SQL like every migration here.

-- A device's data sources beyond channel 0. Channel 0 has no row: every paired device has
-- it, so it is described from the device itself (its id is the device's id).
CREATE TABLE channels (
    id                        TEXT PRIMARY KEY,
    device_id                 TEXT NOT NULL REFERENCES devices (id),
    client_id                 TEXT NOT NULL,    -- the device's own name for the source
    device_model_id           TEXT NOT NULL,
    external_index            BIGINT NOT NULL,  -- what an asset's `channel` field carries
    name                      TEXT NOT NULL,
    asset_type                TEXT,             -- video | audio | data; NULL: by MIME type
    real_time_logging_capable BIGINT NOT NULL DEFAULT 0,
    disconnected_at           BIGINT,           -- NULL while connected
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);
CREATE UNIQUE INDEX channels_device_client ON channels (device_id, client_id);
CREATE UNIQUE INDEX channels_device_index ON channels (device_id, external_index);

-- Comments a device makes on its own clips.
CREATE TABLE comments (
    id         TEXT PRIMARY KEY,
    asset_id   TEXT NOT NULL REFERENCES assets (id),
    device_id  TEXT NOT NULL REFERENCES devices (id),
    body       TEXT NOT NULL,
    frame      BIGINT,                          -- NULL: a comment on the whole clip
    created_at BIGINT NOT NULL
);
CREATE INDEX comments_asset ON comments (asset_id);

-- Real-time logging triggers. `asset_id` is the clip the channel was recording when the
-- trigger came; NULL means none was, and the marker belongs to the next clip that channel
-- creates within 10 minutes, found when read (so creating an asset writes nothing here).
CREATE TABLE markers (
    id            TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL REFERENCES devices (id),
    channel       BIGINT NOT NULL,              -- the channel's external index
    input_index   BIGINT NOT NULL,
    asset_id      TEXT,                         -- no foreign key: an asset undone at create
                                                --  (store unreachable) must stay deletable
    timecode      TEXT NOT NULL,                -- SMPTE HH:MM:SS:FF as the device sent it
    rate_millis   BIGINT NOT NULL,              -- frames per second × 1000 (29.97 → 29970)
    created_at    BIGINT NOT NULL
);
CREATE INDEX markers_asset ON markers (asset_id);
CREATE INDEX markers_pending ON markers (device_id, channel, created_at);
