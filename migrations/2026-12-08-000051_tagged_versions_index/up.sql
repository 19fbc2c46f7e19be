-- The few template versions that declare provisioner tags, for the next migration's job-tags
-- trigger to ask about first. Built CONCURRENTLY, as its own statement: versions are written
-- by template pushes at any time.
CREATE INDEX CONCURRENTLY template_versions_tagged ON template_versions (id)
    WHERE provisioner_tags <> '{}'::jsonb OR prebuild_tags <> '{}'::jsonb;
