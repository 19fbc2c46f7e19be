-- A job's status and an agent's state change on every build of every workspace, and a
-- person's workspace is never in the prebuild snapshot: record those changes only while the
-- workspace belongs to the prebuilds user. A workspace that leaves it (a claim) records its
-- owner change itself, and a reload then drops it from the snapshot, so nothing read later
-- depends on a person's job or agent.
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
        SELECT 'workspace', b.workspace_id FROM workspace_builds b
        JOIN workspaces w ON w.id = b.workspace_id
        WHERE b.job_id = row_.id AND w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0';
    ELSIF TG_TABLE_NAME = 'workspace_agents' THEN
        INSERT INTO prebuild_changes (kind, target_id)
        SELECT 'workspace', b.workspace_id FROM workspace_builds b
        JOIN workspaces w ON w.id = b.workspace_id
        WHERE b.id = row_.build_id AND w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0';
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
        FROM new_rows a JOIN workspace_builds b ON b.id = a.build_id
        JOIN workspaces w ON w.id = b.workspace_id
        WHERE w.owner_id = 'c42fdf75-3097-471c-8c33-fb52454d81c0';
    END IF;
    RETURN NULL;
END
$$;
