//! The daemon in process against a real PostgreSQL: its loops, leadership under faults, concurrent claims and the soak.
//! One test binary per area (cargo links each binary once).

mod faults;
mod lifecycle;
mod prebuilds;
mod reliability_claims;
mod reliability_soak;
mod run;
