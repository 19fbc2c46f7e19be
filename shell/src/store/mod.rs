//! The store: the only module that writes SQL. One submodule per loop loads that loop's
//! snapshot and applies the core's decisions; nothing here decides anything.

pub mod lifecycle;
pub mod prebuilds;
pub mod publish;
pub mod settings;

mod error;
mod rows;

pub use error::StoreError;
