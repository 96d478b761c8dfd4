-- The thumbprint (RFC 7638) of the DPoP key a session is bound to
-- (RFC 9449 §5): each refresh must carry a proof by that key. NULL: the
-- session was started without a proof and its refresh tokens are bearer
-- tokens.
ALTER TABLE sessions ADD COLUMN jkt TEXT;
