-- Every job and agent change recorded again, whoever owns the workspace.
CREATE OR REPLACE FUNCTION poolkeeper_change_workspace() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_ record;
BEGIN
    IF TG_OP = 'DELETE' THEN row_ := OLD; ELSE row_ := NEW; END IF;
    IF TG_TABLE_NAME = 'workspaces' THEN
        INSERT INTO prebuild_changes (kind, target_id) VALUES ('workspace', row_.id);
    ELSIF TG_TABLE_NAME = 'workspace_builds' THEN
        INSERT INTO prebuild_changes (kind, target_id) VALUES ('workspace', row_.workspace_id);
        -- A build that goes or loses its preset may have been that preset's claim: the
        -- workspace's remaining builds no longer say which preset to look at.
        IF TG_OP <> 'INSERT' AND OLD.preset_id IS NOT NULL THEN
            INSERT INTO prebuild_changes (kind, target_id) VALUES ('preset', OLD.preset_id);
        END IF;
    ELSIF TG_TABLE_NAME = 'provisioner_jobs' THEN
        INSERT INTO prebuild_changes (kind, target_id)
        SELECT 'workspace', b.workspace_id FROM workspace_builds b WHERE b.job_id = row_.id;
    ELSIF TG_TABLE_NAME = 'workspace_agents' THEN
        INSERT INTO prebuild_changes (kind, target_id)
        SELECT 'workspace', b.workspace_id FROM workspace_builds b WHERE b.id = row_.build_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION poolkeeper_change_workspaces_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'workspaces' THEN
        INSERT INTO prebuild_changes (kind, target_id) SELECT 'workspace', id FROM new_rows;
    ELSIF TG_TABLE_NAME = 'workspace_builds' THEN
        INSERT INTO prebuild_changes (kind, target_id)
        SELECT DISTINCT 'workspace', workspace_id FROM new_rows;
    ELSIF TG_TABLE_NAME = 'workspace_agents' THEN
        INSERT INTO prebuild_changes (kind, target_id)
        SELECT DISTINCT 'workspace', b.workspace_id
        FROM new_rows a JOIN workspace_builds b ON b.id = a.build_id;
    END IF;
    RETURN NULL;
END
$$;
