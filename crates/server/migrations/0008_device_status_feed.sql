-- The status socket pushes a pause, a resume, an unpairing or a revoked grant to the
-- device within 2 s, whichever server process made the change (several may share the
-- database). Each such change takes the next number of one counter row, in its own
-- transaction, and stamps it on the device: every server polls for devices stamped
-- after the highest number it has seen. The counter's row lock orders the stamps by
-- commit, so a poll never skips one that commits late.
CREATE TABLE device_status_seq (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL
);
INSERT INTO device_status_seq (id, seq) VALUES (1, 0);
ALTER TABLE devices ADD COLUMN status_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX devices_status_seq ON devices (status_seq);
