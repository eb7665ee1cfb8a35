-- A gate visit is queued as one announcement row (channel 'any'), whatever the process that
-- queued it has configured: the delivering process fans it out into one row per event and
-- channel it has configured (checkpoint/notifications.py), so notification settings are read
-- where notifications are delivered.
ALTER TABLE notifications DROP CONSTRAINT IF EXISTS notifications_channel_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_channel_check CHECK (channel IN ('webhook', 'slack', 'email', 'any'));
