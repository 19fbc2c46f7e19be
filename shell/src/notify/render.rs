//! Titles and bodies of notifications: one plain-text and one HTML template per kind, kept
//! in `shell/templates/notifications/` and compiled in. A `.txt` template's first line is
//! the title, then a blank line, then the body. `{{name}}` is replaced by the value of
//! `name` (HTML-escaped in the HTML body); a name without a value reads `unknown`.

use std::collections::BTreeMap;

macro_rules! template {
    ($kind:literal) => {
        (
            $kind,
            include_str!(concat!("../../templates/notifications/", $kind, ".txt")),
            include_str!(concat!("../../templates/notifications/", $kind, ".html")),
        )
    };
}

/// (kind, plain text, HTML). `other` renders a kind this build has no template for (a row
/// written by a newer version).
const TEMPLATES: &[(&str, &str, &str)] = &[
    template!("workspace_dormant"),
    template!("workspace_autodeleted"),
    template!("workspace_autobuild_failed"),
    template!("workspace_autoupdated"),
    template!("preset_hard_limited"),
    template!("prebuild_resources_replaced"),
    template!("test"),
    template!("other"),
];

/// A notification as people read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub title: String,
    pub text: String,
    pub html: String,
}

/// Renders `kind` with `values`.
pub fn render(kind: &str, values: &BTreeMap<String, String>) -> Rendered {
    let (_, text, html) = TEMPLATES
        .iter()
        .find(|(k, _, _)| *k == kind)
        .or_else(|| TEMPLATES.iter().find(|(k, _, _)| *k == "other"))
        .copied()
        .unwrap_or(("other", "{{kind}}\n\n{{labels}}", "<pre>{{labels}}</pre>"));
    let text = fill(text, values, |v| v.to_owned());
    let (title, body) = text.split_once('\n').unwrap_or((&text, ""));
    Rendered {
        title: title.trim().to_owned(),
        text: body.trim_start_matches('\n').to_owned(),
        html: fill(html, values, escape_html),
    }
}

/// `template` with every `{{name}}` replaced by `encode(value)`.
fn fill(
    template: &str,
    values: &BTreeMap<String, String>,
    encode: impl Fn(&str) -> String,
) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        out.push_str(&encode(values.get(name).map_or("unknown", String::as_str)));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The names a template of `kind` uses (for the test that every kind's values cover them).
#[cfg(test)]
fn names_used(kind: &str) -> Vec<String> {
    let (_, text, html) =
        TEMPLATES.iter().find(|(k, _, _)| *k == kind).copied().unwrap_or_default();
    let mut names = Vec::new();
    for template in [text, html] {
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else { break };
            names.push(after[..end].trim().to_owned());
            rest = &after[end + 2..];
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::notifications::Kind;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn title_is_the_first_line_and_html_values_are_escaped() {
        let v = values(&[
            ("username", "<alice>"),
            ("workspace", "dev & test"),
            ("template", "go"),
            ("deleting_at", "2027-01-01 00:00 UTC"),
        ]);
        let r = render("workspace_dormant", &v);
        assert_eq!(r.title, "Workspace dev & test is dormant");
        assert!(r.text.starts_with("Hi <alice>,"), "{}", r.text);
        assert!(r.text.contains("Deletion date: 2027-01-01 00:00 UTC"), "{}", r.text);
        assert!(r.html.contains("Hi &lt;alice&gt;,"), "{}", r.html);
        assert!(r.html.contains("<b>dev &amp; test</b>"), "{}", r.html);
    }

    #[test]
    fn a_missing_value_reads_unknown_and_an_unknown_kind_renders_generically() {
        let r = render("workspace_dormant", &values(&[("username", "bob")]));
        assert_eq!(r.title, "Workspace unknown is dormant");
        let r = render("from_the_future", &values(&[("kind", "from_the_future")]));
        assert_eq!(r.title, "Poolkeeper notification: from_the_future");
    }

    /// Every kind has its own template, and the values the dispatcher supplies for a kind
    /// (see `message::values`) cover every name its templates use.
    #[test]
    fn every_kind_has_a_template_whose_names_are_supplied() {
        for kind in Kind::ALL {
            let used = names_used(kind.as_str());
            assert!(!used.is_empty(), "{} has no template", kind.as_str());
            let supplied = super::super::message::value_names(kind);
            let missing: Vec<_> = used.iter().filter(|n| !supplied.contains(&n.as_str())).collect();
            assert!(missing.is_empty(), "{}: {missing:?} not supplied", kind.as_str());
        }
    }
}
