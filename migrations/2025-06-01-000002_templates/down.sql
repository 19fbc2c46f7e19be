DROP TABLE preset_schedules;
DROP TABLE preset_parameters;
DROP TABLE presets;
ALTER TABLE templates DROP CONSTRAINT templates_active_version_fkey;
DROP TABLE template_versions;
DROP TABLE templates;
