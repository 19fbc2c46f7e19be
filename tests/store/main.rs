//! The store against a real PostgreSQL: claims, lifecycle and prebuild appliers, the loaders, templates, notifications, constraints, migrations, TLS.
//! One test binary per area (cargo links each binary once).

mod auth;
mod bad_rows;
mod claim;
mod claim_batch;
mod dashboard;
mod db_constraints;
mod db_harness;
mod db_migrations;
mod db_session;
mod db_tls;
mod lifecycle;
mod notifications;
mod prebuilds;
mod prebuilds_create;
mod prebuilds_feed;
mod prebuilds_load;
mod template_lookup;
mod templates_apply;
