-- Login failure counters shared by every issuer replica on one
-- PostgreSQL (on SQLite, with its single replica, the issuer counts in
-- memory and leaves these empty). kind is pair, account or addr; the
-- meaning of each is in throttle.go.
CREATE TABLE login_failures (
    kind          TEXT   NOT NULL,
    key           TEXT   NOT NULL,
    n             BIGINT NOT NULL,
    last_unix_ms  BIGINT NOT NULL,
    until_unix_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);

-- (account, address) pairs that logged in successfully, and when.
CREATE TABLE login_known (
    pair       TEXT   PRIMARY KEY,
    at_unix_ms BIGINT NOT NULL
);
