-- Books belong to the caller named by x-user-id (owner_id). Ids come
-- from AUTOINCREMENT so a deleted book's id is never handed out again:
-- a second DELETE of the same id must stay a 404.
CREATE TABLE books (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id   TEXT    NOT NULL CHECK (length(owner_id) BETWEEN 1 AND 256),
    name       TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    author     TEXT    NOT NULL DEFAULT '' CHECK (length(author) <= 200),
    publisher  TEXT    NOT NULL DEFAULT '' CHECK (length(publisher) <= 200),
    book_prize INTEGER NOT NULL DEFAULT 0 CHECK (book_prize BETWEEN 0 AND 1000000000),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- Every query filters by owner and pages by id.
CREATE INDEX books_owner_id_id ON books (owner_id, id);

-- Service-wide secrets, created once at first start and shared by every
-- replica (the key that signs list cursors).
CREATE TABLE books_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
