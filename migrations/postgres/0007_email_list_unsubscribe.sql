-- Where the recipient of an email manages their notification preferences:
-- sent as its `List-Unsubscribe` header (RFC 2369). NULL for the emails a
-- recipient cannot opt out of (mandatory or critical notification types),
-- and for rows queued before this column existed.
ALTER TABLE emails ADD COLUMN list_unsubscribe TEXT;
