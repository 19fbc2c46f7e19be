//! The database layer: diesel schema and row types, the connection pool, the embedded
//! migrations, and a throw-away local PostgreSQL for `poolkeeper demo` and the tests.
//!
//! Only `shell/src/store` writes SQL against these tables; this module defines them.

pub mod enums;
pub mod listen;
pub mod local_server;
pub mod migrate;
pub mod models;
pub mod pool;
pub mod schema;
/// A throw-away database per test; only with the `test-support` feature (tests, benches).
#[cfg(feature = "test-support")]
pub mod test_db;
pub mod tls;

pub use local_server::{LocalServer, ServerTls};
pub use pool::{DbConn, DbPool};

use uuid::Uuid;

/// NOTIFY channel on which a job id is announced when the job becomes `pending` (work to
/// take) or `canceling` (its worker should stop). Sent by a trigger, so only at commit.
pub const JOB_CHANNEL: &str = "poolkeeper_jobs";

/// NOTIFY channel that wakes the prebuild reconciler: presets, schedules, template
/// activity/deletion, settings changed, or a prebuild job finished. The payload (a table
/// name) is informational only.
pub const PRESET_CHANNEL: &str = "poolkeeper_presets";

/// The organization created by the first migration.
pub const DEFAULT_ORGANIZATION_ID: Uuid = Uuid::from_u128(0x162dee20_d710_44ce_bfa3_de9096fddadf);
pub const DEFAULT_ORGANIZATION_NAME: &str = "default";

/// The system user that owns every prebuilt workspace (created by the first migration).
pub const PREBUILDS_USER_ID: Uuid = Uuid::from_u128(0xc42fdf75_3097_471c_8c33_fb52454d81c0);
pub const PREBUILDS_USERNAME: &str = "prebuilds";

/// `settings` key (JSON boolean) that pauses the prebuild reconciler; seeded `false`.
pub const RECONCILIATION_PAUSED_KEY: &str = "reconciliation_paused";
