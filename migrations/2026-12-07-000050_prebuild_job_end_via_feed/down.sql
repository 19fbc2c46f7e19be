CREATE TRIGGER provisioner_jobs_notify_presets
    AFTER UPDATE OF status ON provisioner_jobs
    FOR EACH ROW WHEN (NEW.for_prebuild AND NEW.status IN ('succeeded', 'failed', 'canceled'))
    EXECUTE FUNCTION poolkeeper_notify_presets();
