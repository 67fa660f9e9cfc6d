-- The default inbox list (unread and read items, newest first) now reads the
-- unread and the read range of `notifications_status` or
-- `notifications_category` for at most one page each and merges them (see
-- `inbox::page_sql`). The two partial indexes that served it in one range
-- cost every fan-out row two more index entries, each on a different page
-- per recipient: on a table of 1,000,000 notifications they made a fan-out
-- to 10,000 users twice as slow.
DROP INDEX notifications_active;
DROP INDEX notifications_category_active;
