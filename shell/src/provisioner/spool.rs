//! Results of finished builds not yet saved in the database: one file per job under
//! `<work dir>/spool`, written before the completion is attempted and removed once it is
//! saved. The database may be down when a build ends, and the worker may be stopped before
//! it is back; the state a backend produced is the only record of what exists, so a worker
//! saves whatever it finds here when it starts.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::backend::{AgentSpec, BuildFailure, BuildOutput};
use super::complete::JobResult;
use super::BackendError;

const EXTENSION: &str = "json";

/// A build's result as spooled: everything the completion needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Spooled {
    pub job_id: Uuid,
    /// The worker that ran the job (the job row names it; a restarted worker may not).
    pub worker_id: String,
    pub outcome: Outcome,
    pub error: Option<String>,
    /// The backend's state, hex-encoded (terraform states are text, but need not be).
    pub state_hex: Option<String>,
    pub agents: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    Canceled,
}

impl Spooled {
    pub fn new(job_id: Uuid, worker_id: &str, result: &JobResult) -> Self {
        let (outcome, error, state, agents) = match result {
            JobResult::Succeeded(out) => (
                Outcome::Succeeded,
                None,
                out.state.as_deref(),
                out.agents.iter().map(|a| (a.name.clone(), a.start_secs)).collect(),
            ),
            JobResult::Failed(failure) => (
                Outcome::Failed,
                Some(failure.error.to_string()),
                failure.state.as_deref(),
                Vec::new(),
            ),
            JobResult::Canceled { state } => {
                (Outcome::Canceled, None, state.as_deref(), Vec::new())
            }
        };
        Self {
            job_id,
            worker_id: worker_id.to_owned(),
            outcome,
            error,
            state_hex: state.map(hex),
            agents,
        }
    }

    /// The result again; `None` if the state is not valid hex (a damaged file).
    pub fn result(&self) -> Option<JobResult> {
        let state = match &self.state_hex {
            Some(text) => Some(unhex(text)?),
            None => None,
        };
        Some(match self.outcome {
            Outcome::Succeeded => JobResult::Succeeded(BuildOutput {
                state,
                agents: self
                    .agents
                    .iter()
                    .map(|(name, start_secs)| AgentSpec {
                        name: name.clone(),
                        start_secs: *start_secs,
                    })
                    .collect(),
            }),
            Outcome::Failed => JobResult::Failed(BuildFailure {
                error: BackendError::Spooled(self.error.clone().unwrap_or_default()),
                state,
            }),
            Outcome::Canceled => JobResult::Canceled { state },
        })
    }
}

/// The spool directory under a worker's work directory.
pub(crate) fn dir(work_dir: &Path) -> PathBuf {
    work_dir.join("spool")
}

fn path(dir: &Path, job_id: Uuid) -> PathBuf {
    dir.join(format!("{job_id}.{EXTENSION}"))
}

/// Write `spooled`: a temporary file, then renamed, so a reader never sees half a result.
/// Not synced: the file outlives the worker's process at once, which is what a crash between
/// the build and its completion needs; [`make_durable`] syncs it when the completion cannot
/// be saved, so that it also outlives the machine through the outage. (A sync per job cost
/// more than the whole completion.) The three file operations run as one blocking task: one
/// hand-off to the blocking pool per job instead of three.
pub(crate) async fn write(dir: &Path, spooled: &Spooled) -> std::io::Result<PathBuf> {
    let dir = dir.to_owned();
    let target = path(&dir, spooled.job_id);
    let temporary = dir.join(format!("{}.tmp", spooled.job_id));
    let bytes = serde_json::to_vec(spooled).map_err(std::io::Error::other)?;
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&temporary, &bytes)?;
        std::fs::rename(&temporary, &target)?;
        Ok(target)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Sync a spooled file and its directory (the rename) to disk.
pub(crate) async fn make_durable(path: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(path).await?.sync_all().await?;
    if let Some(dir) = path.parent() {
        tokio::fs::File::open(dir).await?.sync_all().await?;
    }
    Ok(())
}

pub(crate) async fn remove(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot remove a spooled result")
        }
    }
}

/// The spooled results in `dir` (none when it does not exist). An unreadable file is logged
/// and left for a person to look at.
pub(crate) async fn pending(dir: &Path) -> std::io::Result<Vec<(PathBuf, Spooled)>> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut found = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(EXTENSION) {
            continue;
        }
        let parsed = tokio::fs::read(&path)
            .await
            .map_err(|err| err.to_string())
            .and_then(|bytes| serde_json::from_slice::<Spooled>(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(spooled) => found.push((path, spooled)),
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "unreadable spooled result; left in place")
            }
        }
    }
    Ok(found)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_round_trips() {
        let result = JobResult::Succeeded(BuildOutput {
            state: Some(vec![0, 1, 0xab, 0xff, b'{']),
            agents: vec![AgentSpec { name: "main".to_owned(), start_secs: 3 }],
        });
        let spooled = Spooled::new(Uuid::from_u128(7), "w", &result);
        let text = serde_json::to_string(&spooled).expect("serialize");
        let back: Spooled = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, spooled);
        match back.result() {
            Some(JobResult::Succeeded(out)) => {
                assert_eq!(out.state, Some(vec![0, 1, 0xab, 0xff, b'{']));
                assert_eq!(out.agents, vec![AgentSpec { name: "main".to_owned(), start_secs: 3 }]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }
}
