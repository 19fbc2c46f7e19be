DROP TABLE pool_samples;
