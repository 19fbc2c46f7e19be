//! Serde helpers for the strict replay format.

use serde::{Deserialize, Deserializer};

/// Deserializes an `Option<T>` that must be present in the input (possibly `null`).
///
/// Serde treats a missing `Option` field as `None`; docs/replay-format.md makes every field required
/// unless marked optional, so a forgotten field must be an error, not a silent `null`.
pub fn required_nullable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}
