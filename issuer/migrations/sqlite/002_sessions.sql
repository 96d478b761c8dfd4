-- Sessions: one row per login that can be refreshed (a refresh token
-- family). Times are Unix milliseconds (UTC).
CREATE TABLE sessions (
    id                TEXT    PRIMARY KEY,
    subject           TEXT    NOT NULL,
    client_id         TEXT    NOT NULL,
    created_unix_ms   INTEGER NOT NULL,
    last_used_unix_ms INTEGER NOT NULL,
    revoked_unix_ms   INTEGER
);
CREATE INDEX sessions_subject ON sessions (subject);

-- Refresh tokens, stored only as the SHA-256 of the token. A used token
-- stays (used_unix_ms set) so that its reuse is recognised.
CREATE TABLE refresh_tokens (
    hash            TEXT    PRIMARY KEY,
    session_id      TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_unix_ms INTEGER NOT NULL,
    used_unix_ms    INTEGER
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- Access tokens issued, by jti, so that a session's revocation can name
-- them all and /revoke can tell which client a token was issued to.
CREATE TABLE access_tokens (
    jti         TEXT    PRIMARY KEY,
    session_id  TEXT    REFERENCES sessions (id) ON DELETE CASCADE,
    subject     TEXT    NOT NULL,
    client_id   TEXT    NOT NULL,
    exp_unix_ms INTEGER NOT NULL
);
CREATE INDEX access_tokens_session ON access_tokens (session_id);
CREATE INDEX access_tokens_exp ON access_tokens (exp_unix_ms);

-- The revocation feed. Every revocation bumps the single version row in
-- its own transaction; the row lock orders versions as commits are
-- ordered, so a reader that sees version V sees every entry up to V.
CREATE TABLE revocation_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO revocation_version (id, version) VALUES (1, 0);

CREATE TABLE revoked_tokens (
    jti         TEXT    PRIMARY KEY,
    exp_unix_ms INTEGER NOT NULL,
    version     INTEGER NOT NULL
);
CREATE INDEX revoked_tokens_version ON revoked_tokens (version);

-- Per-subject "not before": tokens of subject issued (iat) before
-- not_before_unix_ms are revoked; the row can go at until_unix_ms, when
-- every such token has expired.
CREATE TABLE revoked_subjects (
    subject            TEXT    PRIMARY KEY,
    not_before_unix_ms INTEGER NOT NULL,
    until_unix_ms      INTEGER NOT NULL,
    version            INTEGER NOT NULL
);
CREATE INDEX revoked_subjects_version ON revoked_subjects (version);
