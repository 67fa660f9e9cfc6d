-- A user's totals are now the sum of their category rows (see
-- src/notify/counts.rs): the total rows, category '', go.
DELETE FROM notification_counts WHERE category = '';

-- Counter rows are updated in place all the time. Room on each page lets
-- PostgreSQL update them as heap-only tuples: no new index entry per
-- update, and no index bloat.
ALTER TABLE notification_counts SET (fillfactor = 50);
