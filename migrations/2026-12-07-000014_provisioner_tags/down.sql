DROP TRIGGER workspace_builds_job_tags ON workspace_builds;
DROP FUNCTION poolkeeper_job_tags();
ALTER TABLE provisioner_jobs DROP COLUMN tags;
ALTER TABLE template_versions DROP COLUMN prebuild_tags, DROP COLUMN provisioner_tags;
