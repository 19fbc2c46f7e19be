//! The provisioner against a real PostgreSQL: acquisition, completion, faults, load and the terraform backend.
//! One test binary per area (cargo links each binary once).

mod acquire;
mod completion;
mod context;
mod faults;
mod load;
mod queue;
mod terraform;
