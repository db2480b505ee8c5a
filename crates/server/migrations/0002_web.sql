-- The web UI: administrators, project membership, sign-in sessions, and the count of
-- wrong pairing-code guesses that burns a live code (RFC 8628 §5.1).

ALTER TABLE users ADD COLUMN is_admin BIGINT NOT NULL DEFAULT 0;
UPDATE users SET is_admin = 1 WHERE username = 'admin';

CREATE TABLE project_members (
    project_id TEXT NOT NULL REFERENCES projects (id),
    user_id    TEXT NOT NULL REFERENCES users (id),
    PRIMARY KEY (project_id, user_id)
);

-- Only the hash of a session cookie is stored.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

ALTER TABLE device_codes ADD COLUMN wrong_guesses BIGINT NOT NULL DEFAULT 0;
