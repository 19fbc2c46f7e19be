//! A message as the methods send it: who it is for, what it is about, and its rendered
//! title and bodies. Built from a leased outbox row, or for `notifications test`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::render::{render, Rendered};
use crate::store::delivery::LeasedMessage;
#[cfg(test)]
use crate::store::notifications::Kind;

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    pub id: Uuid,
    pub username: String,
    /// None when the user has no e-mail address.
    pub email: Option<String>,
}

/// One message, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Stable across attempts: receivers deduplicate by it.
    pub id: Uuid,
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub recipient: Recipient,
    pub workspace_id: Option<Uuid>,
    pub preset_id: Option<Uuid>,
    pub template_id: Option<Uuid>,
    /// The payload's fields as text (and the names of what it is about).
    pub labels: BTreeMap<String, String>,
    pub rendered: Rendered,
}

/// Names every message's values have, whatever its kind.
#[cfg(test)]
const COMMON: &[&str] = &["username", "kind", "labels", "workspace", "template", "preset"];

/// The payload fields the enqueuing code writes for `kind` (besides ids), by which its
/// templates may refer to them.
#[cfg(test)]
fn payload_names(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::WorkspaceDormant => &["deleting_at"],
        Kind::WorkspaceAutoupdated => &["template_version_id", "old_template_version_id"],
        Kind::WorkspaceAutobuildFailed => &["transition", "reason", "error"],
        Kind::PrebuildResourcesReplaced => &["resources"],
        Kind::WorkspaceAutodeleted | Kind::PresetHardLimited => &[],
    }
}

/// Every name a template of `kind` may use.
#[cfg(test)]
pub(super) fn value_names(kind: Kind) -> Vec<&'static str> {
    COMMON.iter().chain(payload_names(kind)).copied().collect()
}

impl Message {
    /// The message of a leased outbox row.
    pub fn from_leased(row: &LeasedMessage) -> Self {
        let mut labels = labels_of(&row.payload);
        for (name, value) in [
            ("workspace", &row.workspace_name),
            ("preset", &row.preset_name),
            ("template", &row.template_name),
        ] {
            if let Some(value) = value {
                labels.insert(name.to_owned(), value.clone());
            }
        }
        let recipient = Recipient {
            id: row.user_id,
            username: row.username.clone(),
            email: Some(row.email.trim()).filter(|e| !e.is_empty()).map(str::to_owned),
        };
        let id_of = |name: &str| row.payload.get(name).and_then(|v| v.as_str()?.parse().ok());
        Self {
            id: row.id,
            kind: row.kind.clone(),
            created_at: row.created_at,
            workspace_id: id_of("workspace_id"),
            preset_id: id_of("preset_id"),
            template_id: id_of("template_id"),
            rendered: render(&row.kind, &values(&row.kind, &recipient, &labels)),
            recipient,
            labels,
        }
    }

    /// A test message to `recipient`, naming `method` (`notifications test`).
    pub fn test(recipient: Recipient, method: &str, now: DateTime<Utc>) -> Self {
        let labels = BTreeMap::from([("method".to_owned(), method.to_owned())]);
        Self {
            id: Uuid::new_v4(),
            kind: "test".to_owned(),
            created_at: now,
            workspace_id: None,
            preset_id: None,
            template_id: None,
            rendered: render("test", &values("test", &recipient, &labels)),
            recipient,
            labels,
        }
    }
}

/// The template values: the labels, the recipient's name and the kind; absent names of
/// what the message is about read as their ids, so a deleted workspace is still named.
fn values(
    kind: &str,
    recipient: &Recipient,
    labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut values = labels.clone();
    for name in ["workspace", "preset", "template"] {
        if !values.contains_key(name) {
            if let Some(id) = labels.get(&format!("{name}_id")) {
                values.insert(name.to_owned(), id.clone());
            }
        }
    }
    let listing: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    values.insert("labels".to_owned(), listing.join("\n"));
    values.insert("username".to_owned(), recipient.username.clone());
    values.insert("kind".to_owned(), kind.to_owned());
    values
}

/// A payload's fields as text: strings as they are, lists joined by commas, instants as
/// `YYYY-MM-DD HH:MM UTC`, a null deletion date as `not scheduled`.
fn labels_of(payload: &serde_json::Value) -> BTreeMap<String, String> {
    let Some(fields) = payload.as_object() else { return BTreeMap::new() };
    fields
        .iter()
        .map(|(name, value)| {
            let text = match value {
                serde_json::Value::Null if name.ends_with("_at") => "not scheduled".to_owned(),
                serde_json::Value::Null => "none".to_owned(),
                serde_json::Value::String(s) => match DateTime::parse_from_rfc3339(s) {
                    Ok(at) if name.ends_with("_at") => {
                        at.with_timezone(&Utc).format("%Y-%m-%d %H:%M UTC").to_string()
                    }
                    _ => s.clone(),
                },
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            (name.clone(), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_format_instants_lists_and_nulls() {
        let labels = labels_of(&serde_json::json!({
            "deleting_at": "2027-03-04T05:06:07Z",
            "dormant_at": null,
            "resources": ["a.b", "c.d"],
            "build_number": 3,
            "claimed_by": null,
        }));
        assert_eq!(labels["deleting_at"], "2027-03-04 05:06 UTC");
        assert_eq!(labels["dormant_at"], "not scheduled");
        assert_eq!(labels["resources"], "a.b, c.d");
        assert_eq!(labels["build_number"], "3");
        assert_eq!(labels["claimed_by"], "none");
    }
}
