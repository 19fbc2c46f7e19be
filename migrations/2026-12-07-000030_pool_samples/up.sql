-- The dashboard's 24-hour chart of each pool: what it wanted (desired) and what a claim could
-- take (eligible). The prebuild leader writes one row per preset per five-minute bucket (a
-- later cycle in the same bucket overwrites it) and deletes rows older than a day in the same
-- transaction, so the table stays at most 288 rows per preset. The key leads with the time:
-- both the pruning and the dashboard's read ask for a time range.
CREATE TABLE pool_samples (
    sampled_at timestamptz NOT NULL,
    preset_id  uuid        NOT NULL REFERENCES presets (id) ON DELETE CASCADE,
    desired    integer     NOT NULL CHECK (desired >= 0),
    eligible   integer     NOT NULL CHECK (eligible >= 0),
    PRIMARY KEY (sampled_at, preset_id)
);
