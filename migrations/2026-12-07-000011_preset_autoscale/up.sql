-- Demand-driven pool size (rules §4 "Autoscale"): a preset's pool may follow its claims,
-- clamp(ceil(claims in the last window × headroom), min, max). All four columns are set or
-- none is (NULL = a fixed pool). Adding nullable columns rewrites nothing.
ALTER TABLE presets
    ADD COLUMN autoscale_min         integer          NULL CHECK (autoscale_min >= 0),
    ADD COLUMN autoscale_max         integer          NULL,
    ADD COLUMN autoscale_window_secs bigint           NULL CHECK (autoscale_window_secs > 0),
    ADD COLUMN autoscale_headroom    double precision NULL
        CHECK (autoscale_headroom >= 0 AND autoscale_headroom < 'Infinity'),
    ADD CONSTRAINT presets_autoscale_complete CHECK (
        (autoscale_min IS NULL) = (autoscale_max IS NULL)
        AND (autoscale_min IS NULL) = (autoscale_window_secs IS NULL)
        AND (autoscale_min IS NULL) = (autoscale_headroom IS NULL)
        AND (autoscale_max IS NULL OR autoscale_max >= autoscale_min));
