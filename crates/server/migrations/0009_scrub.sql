-- Scrubbing: a complete clip is re-read now and then and compared with its recorded size
-- and SHA-256 (`rushes check --media`, and the server's own `--scrub-every`).
-- `verified_at`: when it was last re-read; `damaged_at` and `damage`: when that read found
-- it damaged, missing or truncated, and how (NULL while it matches its record); nothing
-- is ever repaired, only reported. `scrub_lease_until`: a server verifying the clip holds
-- it until then (compare-and-set), so two servers never read the same clip at once.
ALTER TABLE assets ADD COLUMN verified_at BIGINT;
ALTER TABLE assets ADD COLUMN damaged_at BIGINT;
ALTER TABLE assets ADD COLUMN damage TEXT;
ALTER TABLE assets ADD COLUMN scrub_lease_until BIGINT;
CREATE INDEX assets_verified ON assets (state, verified_at);
