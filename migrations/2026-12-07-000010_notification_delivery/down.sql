DROP TABLE notification_preferences;
DROP TABLE notification_attempts;
ALTER TABLE notifications
    DROP COLUMN lease_expires_at,
    DROP COLUMN leased_by,
    DROP COLUMN next_attempt_at,
    DROP COLUMN attempts,
    DROP COLUMN status;
