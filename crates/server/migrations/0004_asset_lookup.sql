-- A create is checked against the device's recent identical creates (a retry whose answer
-- was lost). Without this index SQLite searched every asset still uploading, from every
-- device: each create cost more as uploads accumulated. (device_id, name) also serves
-- every lookup assets_device did.
CREATE INDEX assets_device_name ON assets (device_id, name);
DROP INDEX assets_device;
