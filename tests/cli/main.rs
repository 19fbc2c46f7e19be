//! The command line in process: templates and workspaces commands, and the README's own commands.
//! One test binary per area (cargo links each binary once).

mod admin_cli;
mod readme;
mod templates_cli;
mod workspaces_cli;
