//! Results of finished builds not yet saved in the database, under `<work dir>/spool`: each
//! worker appends a build's result to a journal of its own before the completion is
//! attempted, and marks it saved once it is. The database may be down when a build ends, and
//! the worker may be stopped before it is back; the state a backend produced is the only
//! record of what exists, so a worker saves whatever is left unsaved here when it starts.
//!
//! A journal is lines of JSON: `{"result": ...}` when a build ends, `{"saved": "<job id>"}`
//! once its completion is saved; a journal with nothing left unsaved is emptied once it has
//! grown past a megabyte. Earlier versions wrote a file per result (`<job id>.json`); those
//! are still read.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::backend::{AgentSpec, BuildFailure, BuildOutput};
use super::complete::JobResult;
use super::BackendError;

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

/// The extension of a result spooled alone (earlier versions), and of a journal.
const SINGLE_EXTENSION: &str = "json";
const JOURNAL_EXTENSION: &str = "journal";

/// One line of a journal; written from a borrowed result (`Entry<&Spooled>`: a state can be
/// megabytes), read into an owned one.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry<S> {
    Result(S),
    Saved(Uuid),
}

/// A worker's journal of results (see the module's documentation). Opened at the first
/// result; every write runs as one blocking task.
pub(crate) struct Journal {
    path: PathBuf,
    file: Option<std::sync::Arc<Locked>>,
    /// Results written and not yet marked saved.
    unsaved: HashSet<Uuid>,
    /// Bytes written since the journal was last emptied.
    written: u64,
}

/// A journal with nothing unsaved is emptied once it has grown past this; until then a mark
/// is appended (emptying a file costs the filesystem more than appending a line to it).
const EMPTIED_PAST: u64 = 1 << 20;

impl Journal {
    /// The journal of `worker_id` in the spool directory `dir`.
    pub fn new(dir: &Path, worker_id: &str) -> Self {
        let name: String = worker_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') { c } else { '_' })
            .collect();
        // A name of this run's own: a journal left by an earlier run of the same worker id
        // may still hold results (its own saving at start is what empties it).
        let run = Uuid::new_v4().simple();
        Self {
            path: dir.join(format!("{name}-{run}.{JOURNAL_EXTENSION}")),
            file: None,
            unsaved: HashSet::new(),
            written: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `spooled`. Not synced: the line outlives the worker's process at once, which
    /// is what a crash between the build and its completion needs; [`make_durable`] syncs it
    /// when the completion cannot be saved, so that it also outlives the machine through the
    /// outage. (A sync per job cost more than the whole completion.)
    pub async fn record(&mut self, spooled: &Spooled) -> std::io::Result<()> {
        self.append(&Entry::Result(spooled)).await?;
        self.unsaved.insert(spooled.job_id);
        Ok(())
    }

    /// Marks the result of `job_id` saved: a mark is appended, or the journal is emptied
    /// when nothing else in it is unsaved and it has grown large. A failure is logged: the
    /// result is saved, and a worker that finds it again at start saves it again, harmlessly
    /// (the completion is guarded by the job's state).
    pub async fn saved(&mut self, job_id: Uuid) {
        self.unsaved.remove(&job_id);
        if self.file.is_none() {
            return;
        }
        let marked = if self.unsaved.is_empty() && self.written >= EMPTIED_PAST {
            self.empty().await
        } else {
            self.append(&Entry::<&Spooled>::Saved(job_id)).await
        };
        if let Err(err) = marked {
            tracing::warn!(path = %self.path.display(), error = %err,
                "cannot mark a spooled result saved");
        }
    }

    async fn append(&mut self, entry: &Entry<&Spooled>) -> std::io::Result<()> {
        let line = line(entry)?;
        let length = line.len() as u64;
        let file = self.open().await?;
        blocking(move || (&**file).write_all(&line)).await?;
        self.written += length;
        Ok(())
    }

    async fn empty(&mut self) -> std::io::Result<()> {
        let file = self.open().await?;
        blocking(move || file.set_len(0)).await?;
        self.written = 0;
        Ok(())
    }

    /// The journal's file, created and locked at the first write.
    async fn open(&mut self) -> std::io::Result<std::sync::Arc<Locked>> {
        if let Some(file) = &self.file {
            return Ok(file.clone());
        }
        let path = self.path.clone();
        let file = blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            // Held while the worker runs: a worker starting on the same work directory
            // leaves a locked journal to its live owner.
            Locked::try_new(file)?.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::WouldBlock, "journal in use")
            })
        })
        .await?;
        let file = std::sync::Arc::new(file);
        self.file = Some(file.clone());
        Ok(file)
    }
}

fn line(entry: &Entry<&Spooled>) -> std::io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(std::io::Error::other)?
}

/// Sync a journal (or a result spooled alone) and its directory to disk.
pub(crate) async fn make_durable(path: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(path).await?.sync_all().await?;
    if let Some(dir) = path.parent() {
        tokio::fs::File::open(dir).await?.sync_all().await?;
    }
    Ok(())
}

/// A file of the spool and the results in it still to save.
pub(crate) struct SpoolFile {
    pub path: PathBuf,
    pub unsaved: Vec<Spooled>,
    /// Some line could not be read (other than a last line cut short by a crash): the file
    /// is left in place for a person to look at once its readable results are saved.
    pub damaged: bool,
    /// A journal's lock, held until its results are saved and the file removed.
    _lock: Option<Locked>,
}

/// The files of `dir` and their unsaved results (none when it does not exist). A journal
/// another worker holds (locked: that worker runs, and saves its own) is left to it. An
/// unreadable file is logged and left for a person to look at.
pub(crate) async fn pending(dir: &Path) -> std::io::Result<Vec<SpoolFile>> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut found = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        let parsed = match path.extension().and_then(|e| e.to_str()) {
            Some(SINGLE_EXTENSION) => tokio::fs::read(&path)
                .await
                .map_err(|err| err.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Spooled>(&bytes).map_err(|e| e.to_string())
                })
                .map(|spooled| (vec![spooled], false, None)),
            Some(JOURNAL_EXTENSION) => match locked_journal(&path).await {
                Ok(Some((file, bytes))) => {
                    let (unsaved, damaged) = read_journal(&path, &bytes);
                    Ok((unsaved, damaged, Some(file)))
                }
                // A live worker's.
                Ok(None) => continue,
                Err(err) => Err(err.to_string()),
            },
            _ => continue,
        };
        match parsed {
            Ok((unsaved, damaged, lock)) => {
                found.push(SpoolFile { path, unsaved, damaged, _lock: lock });
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "unreadable spool file; left in place")
            }
        }
    }
    Ok(found)
}

/// A journal, locked, and what it holds; `None` when another worker holds its lock.
async fn locked_journal(path: &Path) -> std::io::Result<Option<(Locked, Vec<u8>)>> {
    let path = path.to_owned();
    blocking(move || {
        let Some(file) = Locked::try_new(std::fs::File::open(&path)?)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &*file, &mut bytes)?;
        Ok(Some((file, bytes)))
    })
    .await
}

/// A file under an exclusive advisory lock (`flock`), released when dropped.
pub(crate) struct Locked(
    #[cfg(unix)] nix::fcntl::Flock<std::fs::File>,
    #[cfg(not(unix))] std::fs::File,
);

impl Locked {
    /// `None` when another open file holds the lock.
    fn try_new(file: std::fs::File) -> std::io::Result<Option<Self>> {
        #[cfg(unix)]
        {
            use nix::fcntl::{Flock, FlockArg};
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => Ok(Some(Self(locked))),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
                Err((_, errno)) => Err(std::io::Error::from(errno)),
            }
        }
        // No advisory locks: a journal is always taken as its worker's last.
        #[cfg(not(unix))]
        Ok(Some(Self(file)))
    }
}

impl std::ops::Deref for Locked {
    type Target = std::fs::File;

    fn deref(&self) -> &std::fs::File {
        &self.0
    }
}

/// The results of a journal not marked saved, in the order written, and whether some line
/// could not be read.
fn read_journal(path: &Path, bytes: &[u8]) -> (Vec<Spooled>, bool) {
    let mut results: Vec<Spooled> = Vec::new();
    let mut damaged = false;
    let mut lines = bytes.split(|b| *b == b'\n').peekable();
    while let Some(text) = lines.next() {
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Entry<Spooled>>(text) {
            Ok(Entry::Result(spooled)) => {
                results.retain(|r| r.job_id != spooled.job_id);
                results.push(spooled);
            }
            Ok(Entry::Saved(job_id)) => results.retain(|r| r.job_id != job_id),
            // The last line, cut short: the worker stopped while writing it, before its
            // completion was attempted; the job is the reaper's.
            Err(_) if lines.peek().is_none() => {
                tracing::warn!(path = %path.display(), "a spooled result was cut short");
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "unreadable line in a spool journal");
                damaged = true;
            }
        }
    }
    (results, damaged)
}

/// Removes a spool file whose results are all saved.
pub(crate) async fn remove(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot remove a spool file")
        }
    }
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

    fn failed(job: u128) -> Spooled {
        let failure = BuildFailure { error: BackendError::Spooled("boom".into()), state: None };
        Spooled::new(Uuid::from_u128(job), "w", &JobResult::Failed(failure))
    }

    fn journal_line(entry: &Entry<&Spooled>) -> Vec<u8> {
        line(entry).expect("serialize")
    }

    #[test]
    fn a_journal_holds_the_results_not_marked_saved() {
        let mut bytes = Vec::new();
        let (one, two) = (failed(1), failed(2));
        for entry in [Entry::Result(&one), Entry::Result(&two), Entry::Saved(Uuid::from_u128(1))] {
            bytes.extend(journal_line(&entry));
        }
        let (unsaved, damaged) = read_journal(Path::new("j"), &bytes);
        assert_eq!(unsaved, vec![failed(2)]);
        assert!(!damaged);

        // A last line cut short (the worker stopped while writing it) is not damage.
        let mut cut = bytes.clone();
        cut.extend(&journal_line(&Entry::Result(&failed(3)))[..20]);
        assert_eq!(read_journal(Path::new("j"), &cut), (vec![failed(2)], false));

        // A line that cannot be read before the last is.
        let mut garbled = b"{not json}\n".to_vec();
        garbled.extend(&bytes);
        assert_eq!(read_journal(Path::new("j"), &garbled), (vec![failed(2)], true));
    }

    /// The spool's files by extension, with their unsaved results.
    async fn found(dir: &Path) -> Vec<(String, Vec<Spooled>)> {
        let mut found: Vec<(String, Vec<Spooled>)> = pending(dir)
            .await
            .expect("read the spool")
            .into_iter()
            .map(|file| {
                (file.path.extension().unwrap_or_default().to_string_lossy().into(), file.unsaved)
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// A worker's journal: left alone while its worker runs (it saves its own), found with
    /// what is unsaved once the worker is gone. A result spooled alone by an earlier version
    /// is found too. A journal with nothing unsaved is emptied once it has grown large.
    #[tokio::test]
    async fn unsaved_results_are_found_once_their_worker_is_gone() {
        let dir = std::env::temp_dir().join(format!("poolkeeper-spool-{}", Uuid::new_v4()));
        let mut journal = Journal::new(&dir, "provisioner/1");
        journal.record(&failed(1)).await.expect("record");
        journal.record(&failed(2)).await.expect("record");
        journal.saved(Uuid::from_u128(1)).await;
        std::fs::write(dir.join(format!("{}.json", Uuid::from_u128(9))), {
            serde_json::to_vec(&failed(9)).expect("serialize")
        })
        .expect("an earlier version's file");
        assert!(journal.path().starts_with(&dir));

        assert_eq!(found(&dir).await, vec![("json".to_owned(), vec![failed(9)])]);

        journal.written = EMPTIED_PAST;
        journal.saved(Uuid::from_u128(2)).await;
        assert_eq!(std::fs::metadata(journal.path()).expect("the journal").len(), 0);
        journal.record(&failed(3)).await.expect("record");
        let path = journal.path().to_owned();
        drop(journal);
        assert_eq!(
            found(&dir).await,
            vec![("journal".to_owned(), vec![failed(3)]), ("json".to_owned(), vec![failed(9)])]
        );
        assert!(path.exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
