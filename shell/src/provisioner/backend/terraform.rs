//! The terraform backend: the real `terraform` CLI in a fresh working directory per job,
//! copied from the version's module directory (`source.dir`) and removed afterwards. The
//! state file round-trips through the build's `provisioner_state`, so nothing of an earlier
//! job (a `.tf` file a newer version removed, say) can leak into the next one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::{agent_names, AgentSpec, BuildFailure, BuildOutput};
use crate::db::enums::Transition;
use crate::provisioner::context::JobContext;
use crate::provisioner::BackendError;

const STATE_FILE: &str = "terraform.tfstate";

/// How long a canceled terraform may take to stop cleanly (and write its state) after SIGINT
/// before its whole process group is killed.
const CANCEL_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
pub struct TerraformConfig {
    /// The binary, looked up on PATH unless it has a directory part.
    pub bin: String,
    /// Parent of the per-job working directories (and of the worker's spool of results not
    /// yet saved).
    pub work_dir: PathBuf,
}

impl Default for TerraformConfig {
    fn default() -> Self {
        Self { bin: "terraform".to_owned(), work_dir: std::env::temp_dir().join("poolkeeper") }
    }
}

pub async fn run(
    config: &TerraformConfig,
    ctx: &JobContext,
    cancel: &CancellationToken,
) -> Result<BuildOutput, BuildFailure> {
    let source_dir =
        ctx.version.source.get("dir").and_then(|dir| dir.as_str()).ok_or_else(|| {
            BackendError::InvalidSource("dir: expected the module directory".into())
        })?;
    let agents = agent_names(&ctx.version.source)?;
    let dir = config.work_dir.join(format!("job-{}", ctx.job.id));
    let prepared =
        prepare_dir(Path::new(source_dir), &dir, ctx.build.provisioner_state.as_deref()).await;
    let result = match prepared {
        Ok(()) => apply(config, ctx, &dir, agents, cancel).await,
        Err(error) => Err(error.into()),
    };
    // The state is in the result now; the directory holds nothing else worth keeping.
    if let Err(err) = tokio::fs::remove_dir_all(&dir).await {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %err,
                "cannot remove the job's terraform directory");
        }
    }
    result
}

/// init, then apply (or destroy), in the prepared `dir`.
async fn apply(
    config: &TerraformConfig,
    ctx: &JobContext,
    dir: &Path,
    agents: Vec<String>,
    cancel: &CancellationToken,
) -> Result<BuildOutput, BuildFailure> {
    let transition = ctx.build.transition;
    let mut vars = vec![
        ("workspace_id".to_owned(), ctx.workspace.id.to_string()),
        ("workspace_name".to_owned(), ctx.workspace.name.clone()),
        ("owner".to_owned(), ctx.owner.username.clone()),
        ("transition".to_owned(), transition.as_str().to_owned()),
    ];
    vars.extend(ctx.parameters.iter().cloned());

    terraform(config, dir, "init", &["init", "-input=false", "-no-color"], &[], cancel).await?;
    let step = match transition {
        Transition::Start | Transition::Stop => "apply",
        Transition::Delete => "destroy",
    };
    let result = terraform(
        config,
        dir,
        step,
        &[step, "-input=false", "-auto-approve", "-no-color"],
        &vars,
        cancel,
    )
    .await;
    // Keep whatever state terraform wrote, even after a failed apply: it records what exists.
    let state_path = dir.join(STATE_FILE);
    let state = match tokio::fs::read(&state_path).await {
        Ok(state) => Some(state),
        // A run that failed before writing any state leaves the previous one in force.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && result.is_err() => None,
        Err(source) => {
            let unreadable =
                BackendError::StateUnreadable { path: state_path.display().to_string(), source };
            // A succeeded apply without its state would leave the previous build's state in
            // force, describing resources that may no longer exist: fail the job instead.
            let error = match result {
                Ok(()) => unreadable,
                Err(error) => {
                    tracing::error!(error = %unreadable, "and the failed run's state is lost");
                    error
                }
            };
            return Err(BuildFailure { error, state: None });
        }
    };
    match result {
        Ok(()) => {
            let agents = match transition {
                Transition::Start => {
                    agents.into_iter().map(|name| AgentSpec { name, start_secs: 0 }).collect()
                }
                Transition::Stop | Transition::Delete => Vec::new(),
            };
            Ok(BuildOutput { state, agents })
        }
        Err(error) => Err(BuildFailure { error, state }),
    }
}

/// A fresh copy of the module with the previous state, if any. A directory left by an
/// earlier attempt at the same job (a worker killed mid-run) is removed first.
async fn prepare_dir(source: &Path, dir: &Path, state: Option<&[u8]>) -> Result<(), BackendError> {
    let work_dir_error =
        |path: &Path, source| BackendError::WorkDir { path: path.display().to_string(), source };
    match tokio::fs::remove_dir_all(dir).await {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(work_dir_error(dir, err))
        }
        _ => {}
    }
    tokio::fs::create_dir_all(dir).await.map_err(|err| work_dir_error(dir, err))?;
    let mut entries =
        tokio::fs::read_dir(source).await.map_err(|err| work_dir_error(source, err))?;
    while let Some(entry) = entries.next_entry().await.map_err(|err| work_dir_error(source, err))? {
        let name = entry.file_name();
        let is_file = entry.file_type().await.map(|t| t.is_file()).unwrap_or(false);
        // Modules are flat .tf files; the state and provider cache are never copied.
        let skip = name.to_string_lossy().contains(".tfstate");
        if is_file && !skip {
            let target = dir.join(&name);
            tokio::fs::copy(entry.path(), &target)
                .await
                .map_err(|err| work_dir_error(&target, err))?;
        }
    }
    let state_path = dir.join(STATE_FILE);
    match state {
        Some(state) if !state.is_empty() => tokio::fs::write(&state_path, state).await,
        _ => match tokio::fs::remove_file(&state_path).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        },
    }
    .map_err(|err| work_dir_error(&state_path, err))
}

/// One terraform command. When `cancel` fires, terraform is interrupted as a person would
/// (SIGINT: it stops its provisioners and writes the state it has), then, once it exits or the
/// grace period ends, whatever is left of its process group is killed.
async fn terraform(
    config: &TerraformConfig,
    dir: &Path,
    step: &'static str,
    args: &[&str],
    vars: &[(String, String)],
    cancel: &CancellationToken,
) -> Result<(), BackendError> {
    let mut command = Command::new(&config.bin);
    command
        .args(args)
        .args(vars.iter().flat_map(|(name, value)| ["-var".to_owned(), format!("{name}={value}")]))
        .current_dir(dir)
        // Offline and quiet: no version check, no prompts.
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_IN_AUTOMATION", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // A group of its own: the signals reach the commands terraform runs (local-exec) too.
    #[cfg(unix)]
    command.process_group(0);
    let child = command
        .spawn()
        .map_err(|source| BackendError::TerraformMissing { bin: config.bin.clone(), source })?;
    let group = child.id();
    let waiting = child.wait_with_output();
    tokio::pin!(waiting);
    let output = tokio::select! {
        () = cancel.cancelled() => {
            signal_group(group, GroupSignal::Interrupt);
            if tokio::time::timeout(CANCEL_GRACE, &mut waiting).await.is_err() {
                tracing::warn!(step, grace_secs = CANCEL_GRACE.as_secs(),
                    "terraform did not stop after SIGINT; killing it");
            }
            signal_group(group, GroupSignal::Kill);
            return Err(BackendError::Canceled);
        }
        output = &mut waiting => output,
    };
    let output = output
        .map_err(|source| BackendError::WorkDir { path: dir.display().to_string(), source })?;
    if output.status.success() {
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    }
    // The error column is for people: keep the end, where terraform puts the cause.
    if stderr.len() > 4000 {
        let cut = stderr.len() - 4000;
        let cut = (cut..stderr.len()).find(|i| stderr.is_char_boundary(*i)).unwrap_or(cut);
        stderr = stderr[cut..].to_owned();
    }
    Err(BackendError::TerraformStep { step, status: output.status.to_string(), stderr })
}

#[derive(Debug, Clone, Copy)]
enum GroupSignal {
    Interrupt,
    Kill,
}

/// Sends `signal` to the process group led by `leader` (a group that is already gone is fine).
#[cfg(unix)]
fn signal_group(leader: Option<u32>, signal: GroupSignal) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let Some(pid) = leader.and_then(|id| i32::try_from(id).ok()) else { return };
    let signal = match signal {
        GroupSignal::Interrupt => Signal::SIGINT,
        GroupSignal::Kill => Signal::SIGKILL,
    };
    match killpg(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(err) => tracing::warn!(pid, ?signal, error = %err, "cannot signal terraform"),
    }
}

/// Elsewhere the child is killed when dropped (`kill_on_drop`).
#[cfg(not(unix))]
fn signal_group(_leader: Option<u32>, _signal: GroupSignal) {}
