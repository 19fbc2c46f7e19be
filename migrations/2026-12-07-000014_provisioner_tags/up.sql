-- Provisioner tags (rules §6): a template version declares the tags of its jobs (and the
-- tags of its prebuilds' jobs, which win on the same key); a worker takes only jobs whose
-- tags its own cover (`tags <@ worker`). Adding columns with a constant default rewrites
-- nothing.
ALTER TABLE template_versions
    ADD COLUMN provisioner_tags jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(provisioner_tags) = 'object'),
    ADD COLUMN prebuild_tags jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(prebuild_tags) = 'object');
ALTER TABLE provisioner_jobs
    ADD COLUMN tags jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tags) = 'object');

-- Every job gets its tags from the version of its build, whichever path inserted the two
-- rows (a job is inserted before its build, which references it): once per statement, over
-- the builds it inserted, and only for versions that have tags. The job is not visible to
-- any worker before the commit, so it is never taken untagged. Updating `tags` does not
-- announce the job again (that trigger watches `status`).
CREATE FUNCTION poolkeeper_job_tags() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE provisioner_jobs j
       SET tags = v.provisioner_tags
                  || CASE WHEN j.for_prebuild THEN v.prebuild_tags ELSE '{}'::jsonb END
      FROM new_builds b
      JOIN template_versions v ON v.id = b.template_version_id
     WHERE j.id = b.job_id
       AND (v.provisioner_tags <> '{}'::jsonb
            OR (j.for_prebuild AND v.prebuild_tags <> '{}'::jsonb));
    RETURN NULL;
END
$$;

CREATE TRIGGER workspace_builds_job_tags
    AFTER INSERT ON workspace_builds
    REFERENCING NEW TABLE AS new_builds
    FOR EACH STATEMENT EXECUTE FUNCTION poolkeeper_job_tags();
