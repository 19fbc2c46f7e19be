CREATE OR REPLACE FUNCTION poolkeeper_job_tags() RETURNS trigger LANGUAGE plpgsql AS $$
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
