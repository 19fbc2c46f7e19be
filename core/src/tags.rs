//! Provisioner tags (rules §7): a job carries the tags of its template version (and a
//! prebuild's job its version's prebuild tags over them); a worker takes a job only when its
//! own tags cover the job's.

use std::collections::BTreeMap;

/// Tags by key; at most one value per key.
pub type Tags = BTreeMap<String, String>;

/// rules §7: every tag of the job is one of the worker's, with the same value. An untagged
/// job is covered by every worker; a tagged job never by an untagged one.
pub fn covers(worker: &Tags, job: &Tags) -> bool {
    job.iter().all(|(key, value)| worker.get(key) == Some(value))
}

/// rules §7: the tags of a job of a version with `version` tags and `prebuild` tags; the
/// prebuild tags apply to a prebuild's jobs and win over the version's on the same key.
pub fn job_tags(version: &Tags, prebuild: &Tags, for_prebuild: bool) -> Tags {
    let mut tags = version.clone();
    if for_prebuild {
        tags.extend(prebuild.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    tags
}

/// Checks one tag: a key of letters, digits, `_`, `-`, `.` or `/`, and a non-empty value.
pub fn check_tag(key: &str, value: &str) -> Result<(), String> {
    let key_ok = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if !key_ok {
        return Err(format!("tag key {key:?}: letters, digits, '_', '-', '.' or '/' only"));
    }
    if value.is_empty() {
        return Err(format!("tag {key:?}: the value must not be empty"));
    }
    Ok(())
}

/// A `key=value` tag as written on a command line.
pub fn parse_tag(text: &str) -> Result<(String, String), String> {
    let (key, value) =
        text.split_once('=').ok_or_else(|| format!("{text:?} is not a tag like region=eu"))?;
    check_tag(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_worker_covers_the_jobs_whose_tags_it_has() {
        let fleet = tags(&[("pool", "prebuilds"), ("region", "eu")]);
        assert!(covers(&fleet, &tags(&[])));
        assert!(covers(&fleet, &tags(&[("region", "eu")])));
        assert!(covers(&fleet, &fleet));
        assert!(!covers(&fleet, &tags(&[("region", "us")])));
        assert!(!covers(&fleet, &tags(&[("pool", "people"), ("region", "eu")])));
        assert!(!covers(&tags(&[]), &tags(&[("region", "eu")])));
    }

    #[test]
    fn prebuild_tags_apply_to_prebuild_jobs_and_win() {
        let version = tags(&[("pool", "people"), ("region", "eu")]);
        let prebuild = tags(&[("pool", "prebuilds")]);
        assert_eq!(job_tags(&version, &prebuild, false), version);
        assert_eq!(
            job_tags(&version, &prebuild, true),
            tags(&[("pool", "prebuilds"), ("region", "eu")])
        );
    }

    #[test]
    fn tags_parse_and_refuse_what_they_cannot_hold() {
        assert_eq!(parse_tag("region=eu"), Ok(("region".to_owned(), "eu".to_owned())));
        assert_eq!(parse_tag("k=a=b"), Ok(("k".to_owned(), "a=b".to_owned())));
        assert!(parse_tag("region").is_err());
        assert!(parse_tag("=eu").is_err());
        assert!(parse_tag("region=").is_err());
        assert!(parse_tag("re gion=eu").is_err());
    }
}
