-- Re-created assets and re-sent clips (c2c-api.md §4). A create that matches an unfinished
-- asset of the same device, name and size supersedes it (state 'superseded', `superseded_by`
-- the new asset); a clip that completes identical to a complete clip of the same device in
-- the same folder is recorded as a duplicate of it (state 'duplicate', `duplicate_of` the
-- original). Neither is listed, and both give up their path. `abort_upload_at`: when the
-- store's upload of a superseded asset is aborted (S3: once every URL handed out for it
-- has expired, so a late PUT is still answered 200 by the bucket), NULL once done.
ALTER TABLE assets ADD COLUMN superseded_by TEXT;
ALTER TABLE assets ADD COLUMN duplicate_of TEXT;
ALTER TABLE assets ADD COLUMN abort_upload_at BIGINT;
CREATE INDEX assets_abort_upload ON assets (abort_upload_at);
