-- Uploads held by an S3-compatible store (devices PUT parts straight into the bucket):
-- the object key and multipart upload id, when a server should next list the parts that
-- arrived (backing off while nothing changes), and when the upload last moved, so uploads
-- abandoned for too long can be aborted. All NULL with the local store.
ALTER TABLE assets ADD COLUMN object_key TEXT;
ALTER TABLE assets ADD COLUMN upload_id TEXT;
ALTER TABLE assets ADD COLUMN next_check_at BIGINT;
ALTER TABLE assets ADD COLUMN check_pause_ms BIGINT;
ALTER TABLE assets ADD COLUMN active_at BIGINT;
CREATE INDEX assets_next_check ON assets (next_check_at);
CREATE INDEX assets_object_key ON assets (object_key);
