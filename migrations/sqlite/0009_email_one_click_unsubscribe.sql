-- The one-click unsubscribe address (RFC 8058) of an email: an HTTPS URL
-- that stops emails like it on a bare POST. Sent first in `List-Unsubscribe`
-- (before the preferences page of `list_unsubscribe`), with
-- `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. NULL when there is
-- none: emails one cannot opt out of, no `https` public URL, and rows
-- queued before this column existed.
ALTER TABLE emails ADD COLUMN one_click_unsubscribe TEXT;
