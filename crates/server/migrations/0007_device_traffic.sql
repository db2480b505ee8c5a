-- Device-API requests that failed or hit an unknown route (see crates/server/src/capture),
-- already redacted, so an operator can see what a new device sent. Kept to the newest few
-- (1,000): every insert prunes in the same transaction, by the time-ordered id.
CREATE TABLE device_traffic (
    id          TEXT PRIMARY KEY,      -- UUIDv7: time ordered
    at          BIGINT NOT NULL,
    device_id   TEXT,                  -- no foreign key: a record outlives its device
    remote_addr TEXT NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    query       TEXT,
    headers     TEXT NOT NULL,         -- JSON array of [name, value]
    body        TEXT,                  -- first 4 KiB of a non-part body
    body_length BIGINT NOT NULL,
    status      BIGINT NOT NULL,
    detail      TEXT,
    known_route BIGINT NOT NULL
);
CREATE INDEX device_traffic_device ON device_traffic (device_id, id);
