ALTER TABLE presets
    DROP CONSTRAINT presets_autoscale_complete,
    DROP COLUMN autoscale_headroom,
    DROP COLUMN autoscale_window_secs,
    DROP COLUMN autoscale_max,
    DROP COLUMN autoscale_min;
