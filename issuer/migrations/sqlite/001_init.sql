-- Accounts. name_key is the lower-cased name: names are unique without
-- regard to case, so "Alain" cannot impersonate "alain". Times are Unix
-- milliseconds (UTC).
CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id       TEXT    NOT NULL UNIQUE,
    name            TEXT    NOT NULL CHECK (length(name) BETWEEN 3 AND 64),
    name_key        TEXT    NOT NULL UNIQUE,
    password_hash   TEXT    NOT NULL,
    created_unix_ms INTEGER NOT NULL
);

-- Signing keys seen in the key directory. Only public parts are stored:
-- a removed key stays published (from public_jwk) until the last token it
-- signed has expired, across restarts and replicas.
CREATE TABLE signing_keys (
    kid                  TEXT    PRIMARY KEY,
    alg                  TEXT    NOT NULL,
    public_jwk           TEXT    NOT NULL,
    first_seen_unix_ms   INTEGER NOT NULL,
    signed_until_unix_ms INTEGER
);
