//! Declarative templates files (`poolkeeper templates apply FILE`, `PUT /api/v1/templates`).
//!
//! Parse, then apply: text (TOML or JSON) becomes a [`TemplateSpec`] here, with every
//! error naming its field; only a valid spec reaches `store::templates::apply`.

mod raw;
mod validate;

pub use raw::{RawAutoscale, RawFile, RawPreset, RawSchedule, RawTemplate, RawVersion};
pub use validate::{
    validate, AutoscaleSpec, PresetSpec, ScheduleSpec, TemplateOptions, TemplateSpec, VersionSpec,
};

/// Invalid input, located at a field (`presets[1].schedules[0].cron`); `field` is empty when
/// the whole document is unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// Short stable label (logs, metrics).
    pub fn label(&self) -> &'static str {
        "invalid_input"
    }
}

/// Parses and validates a TOML templates file.
pub fn parse_toml(text: &str) -> Result<TemplateSpec, FieldError> {
    from_value(toml_value(text)?)
}

/// A TOML document as JSON (TOML and JSON files then share one path-aware deserialization).
pub fn toml_value(text: &str) -> Result<serde_json::Value, FieldError> {
    let value: toml::Table =
        text.parse().map_err(|err: toml::de::Error| FieldError::new("", err.to_string()))?;
    serde_json::to_value(value).map_err(|err| FieldError::new("", err.to_string()))
}

/// Parses and validates a JSON templates file.
pub fn parse_json(text: &str) -> Result<TemplateSpec, FieldError> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|err| FieldError::new("", err.to_string()))?;
    from_value(json)
}

/// Validates a templates file already read into JSON.
pub fn from_value(json: serde_json::Value) -> Result<TemplateSpec, FieldError> {
    let raw: RawFile = serde_path_to_error::deserialize(json).map_err(|err| path_error("", err))?;
    validate(raw)
}

/// A deserialization error located at its field under `prefix`. serde reports a missing
/// field at its parent, so its name is appended from the message.
pub fn path_error(prefix: &str, err: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = err.path().to_string();
    let message = err.into_inner().to_string();
    let mut parts: Vec<String> = Vec::new();
    if !prefix.is_empty() {
        parts.push(prefix.to_owned());
    }
    if path != "." {
        parts.push(path.clone());
    }
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    parts.extend(missing);
    let mut field = parts.join(".");
    if field.is_empty() && path != "." {
        // The offending key is itself empty (`"": ...`): name it as written.
        field = "\"\"".to_owned();
    }
    FieldError::new(field, message)
}
