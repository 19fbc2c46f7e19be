//! The rules without a database: the core's purity, its property tests, the replay corpus and hostile replay input.
//! One test binary per area (cargo links each binary once).

mod core_purity;
mod lifecycle_props;
mod prebuild_props;
mod reliability_core_props;
mod reliability_hostile_input;
mod replay_corpus;
mod replay_hostile_input;
mod schedule_props;
