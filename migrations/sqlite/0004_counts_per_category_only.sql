-- A user's totals are now the sum of their category rows (see
-- src/notify/counts.rs): the total rows, category '', go.
DELETE FROM notification_counts WHERE category = '';
