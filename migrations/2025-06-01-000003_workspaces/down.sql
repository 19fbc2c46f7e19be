DROP TABLE workspace_agents;
DROP TABLE workspace_builds;
DROP TABLE workspaces;
DROP TABLE provisioner_jobs;
