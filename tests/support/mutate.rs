//! Mutations of valid input for the hostile-input property tests: a scalar of a JSON
//! document swapped for a hostile value, or bytes of a text cut out and garbage spliced in.

use proptest::prelude::*;
use serde_json::Value;

/// How many scalars (leaves) `value` has: the range of [`replace_scalar`]'s `pick`.
pub fn count_scalars(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.values().map(count_scalars).sum(),
        Value::Array(items) => items.iter().map(count_scalars).sum(),
        _ => 1,
    }
}

/// Replaces the `pick`-th scalar of the document (depth-first) with `replacement`; returns
/// the replaced scalar's path (`presets[0].cron`), or `None` when there are fewer scalars.
pub fn replace_scalar(value: &mut Value, pick: &mut usize, replacement: &Value) -> Option<String> {
    match value {
        Value::Object(map) => map.iter_mut().find_map(|(key, v)| {
            replace_scalar(v, pick, replacement).map(|path| format!("{key}{}", prefixed(&path)))
        }),
        Value::Array(items) => items.iter_mut().enumerate().find_map(|(i, v)| {
            replace_scalar(v, pick, replacement).map(|path| format!("[{i}]{}", prefixed(&path)))
        }),
        scalar => {
            if *pick == 0 {
                *scalar = replacement.clone();
                Some(String::new())
            } else {
                *pick -= 1;
                None
            }
        }
    }
}

fn prefixed(path: &str) -> String {
    if path.is_empty() || path.starts_with('[') {
        path.to_owned()
    } else {
        format!(".{path}")
    }
}

/// A value of any JSON type that a field does not expect: extremes, empty and nested
/// containers, random text, and `texts` chosen for the input at hand.
pub fn hostile_scalar(texts: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        Just(Value::from("")),
        Just(Value::from("'; DROP TABLE presets; --")),
        Just(Value::Array(vec![])),
        Just(serde_json::json!({"nested": {"deeper": [1, 2, 3]}})),
        prop::sample::select(texts).prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ]
    .boxed()
}

/// `text` with `garbage` spliced over `cut` bytes at `at` (on character boundaries).
pub fn splice(text: &str, at: prop::sample::Index, cut: usize, garbage: &str) -> String {
    let mut start = at.index(text.len().max(1)).min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + cut).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}{}", &text[..start], garbage, &text[end..])
}
