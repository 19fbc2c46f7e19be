//! Templates: applying a templates file (`apply`), finding a template by name (`lookup`) and
//! invalidating a preset's prebuilds (`invalidate`). What the API and CLI list and show is in
//! `store::template_views`, the pool counts in `store::pools`.

mod apply;
mod invalidate;
mod lookup;

pub use apply::{apply, apply_by, ApplyError, ApplyOutcome};
pub use invalidate::invalidate_preset;
pub use lookup::{find_template, FoundTemplate, TemplateFinder, TemplateName};
