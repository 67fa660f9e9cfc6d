-- Login throttling: consecutive failed sign-ins per account and per source
-- address, shared by every node (see src/auth/service/throttle.rs). Keys are
-- SHA-256 hashes; times are milliseconds since the Unix epoch.
CREATE TABLE login_throttle (
    key              TEXT PRIMARY KEY,
    failures         BIGINT NOT NULL,
    last_failure_at  BIGINT NOT NULL
);
-- Counters nobody failed on for an hour are purged by age.
CREATE INDEX login_throttle_age ON login_throttle (last_failure_at);
