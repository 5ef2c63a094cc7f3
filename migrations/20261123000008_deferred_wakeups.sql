-- apalis's insert trigger sends its NOTIFY inside the inserting transaction, and
-- Postgres lets only one notifying transaction commit at a time, so busy intake routes
-- queue up behind each other's commit. A transaction that sets
-- `syncline.wakeup = 'deferred'` (see jobs/src/core/notifier.rs) skips the trigger and
-- its process sends the wake-up after commit instead. apalis's function is unchanged;
-- only the trigger gains a condition. Should a later apalis migration recreate the
-- trigger, both wake-ups are sent: harmless, only slower.
DROP TRIGGER IF EXISTS notify_workers ON apalis.jobs;
CREATE TRIGGER notify_workers
    AFTER INSERT ON apalis.jobs
    FOR EACH ROW
    WHEN (current_setting('syncline.wakeup', true) IS DISTINCT FROM 'deferred')
    EXECUTE FUNCTION apalis.notify_new_jobs();
