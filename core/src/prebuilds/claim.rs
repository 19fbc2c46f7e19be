//! The claim choice (rules §4 "Claim choice").

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rows::{is_expired, order_running};
use super::{Preset, RunningPrebuild};

/// The prebuilds a claim may take, best first. The shell locks the first with
/// `FOR UPDATE SKIP LOCKED`; a row that is gone or locked means "try the next", and no
/// candidate left means "build a fresh workspace".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimChoice {
    pub candidates: Vec<Uuid>,
}

impl ClaimChoice {
    /// The row to try first, if any.
    pub fn chosen(&self) -> Option<Uuid> {
        self.candidates.first().copied()
    }
}

/// rules §4: among the rows of `preset` that are ready, not expired, on the active version of a
/// non-deleted template, the oldest first (by `created_at`, ties by id), so prebuilds are used
/// before they expire.
///
/// A deprecated template does not block a claim: rules §4 lists only the active version and a
/// live template here (unlike `active(P)`). Refusing new workspaces on a deprecated template is
/// the API's decision, taken before it asks for a claim; the reconciler drains the pool.
/// A row must also carry the preset's own version (the active one), so a row whose version
/// disagrees with its preset is never handed out.
pub fn choose_claim(rows: &[RunningPrebuild], preset: &Preset, now: DateTime<Utc>) -> ClaimChoice {
    if !preset.using_active_version || preset.template_deleted {
        return ClaimChoice::default();
    }
    let mut eligible: Vec<&RunningPrebuild> = rows
        .iter()
        .filter(|row| {
            row.preset_id == preset.id
                && row.template_version_id == preset.template_version_id
                && row.ready
                && !is_expired(row, preset, now)
        })
        .collect();
    order_running(&mut eligible);
    ClaimChoice { candidates: eligible.iter().map(|row| row.workspace_id).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prebuilds::rows::tests::{id, preset, running, t};

    #[test]
    fn oldest_ready_fresh_row_first_ties_by_id() {
        let mut p = preset(1);
        p.expiration_ttl_secs = 3600;
        let mut not_ready = running(1, 1, "2025-06-02T08:10:00Z");
        not_ready.ready = false;
        let rows = vec![
            running(5, 1, "2025-06-02T08:30:00Z"),
            running(4, 1, "2025-06-02T08:30:00Z"),
            running(3, 1, "2025-06-02T07:00:00Z"), // expired
            running(2, 2, "2025-06-02T08:00:00Z"), // another preset
            not_ready,
            running(6, 1, "2025-06-02T08:20:00Z"),
        ];
        let choice = choose_claim(&rows, &p, t("2025-06-02T09:00:00Z"));
        assert_eq!(choice.candidates, [id(6), id(4), id(5)]);
        assert_eq!(choice.chosen(), Some(id(6)));
    }

    #[test]
    fn no_claim_from_an_old_version_or_a_deleted_template() {
        let rows = vec![running(1, 1, "2025-06-02T08:00:00Z")];
        let now = t("2025-06-02T09:00:00Z");
        let mut p = preset(1);
        p.using_active_version = false;
        assert_eq!(choose_claim(&rows, &p, now).chosen(), None);
        let mut p = preset(1);
        p.template_deleted = true;
        assert_eq!(choose_claim(&rows, &p, now).chosen(), None);
        let mut p = preset(1);
        p.template_deprecated = true;
        assert_eq!(choose_claim(&rows, &p, now).chosen(), Some(id(1)), "deprecated may claim");
    }

    #[test]
    fn invalidated_rows_are_not_claimed() {
        let mut p = preset(1);
        p.invalidated_at = Some(t("2025-06-02T08:30:00Z"));
        let rows =
            vec![running(1, 1, "2025-06-02T08:00:00Z"), running(2, 1, "2025-06-02T08:40:00Z")];
        assert_eq!(choose_claim(&rows, &p, t("2025-06-02T09:00:00Z")).candidates, [id(2)]);
    }
}
