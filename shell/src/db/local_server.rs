//! A private, throw-away PostgreSQL server for `poolkeeper demo` and the tests: a fresh
//! cluster in a temporary directory (on tmpfs when there is a roomy one), on a free loopback
//! port, tuned for speed over durability (fsync off), started from the installed server
//! binaries.
//!
//! It cannot outlive its owner. postgres runs under a small `sh` watchdog whose stdin is a
//! pipe held only by this process: when the pipe closes — `stop`, drop, or this process
//! exiting or being killed in any way — the watchdog stops postgres and removes the
//! directory. The watchdog has its own process group, so a Ctrl-C aimed at our process
//! group does not bypass that cleanup.
//!
//! PostgreSQL refuses to run as root; as root, the server runs as the `postgres` OS user.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The superuser role created by initdb; connections use trust authentication.
const SUPERUSER: &str = "postgres";
/// Environment variable naming a directory holding `initdb` and `postgres`, to override
/// the search.
pub const BIN_DIR_ENV: &str = "POOLKEEPER_PG_BIN_DIR";
/// Environment variable naming the directory under which clusters are created.
pub const PARENT_DIR_ENV: &str = "POOLKEEPER_LOCAL_PG_DIR";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// A free port can be taken by someone else before postgres binds it; then start again.
const START_ATTEMPTS: u32 = 3;

/// Runs postgres (`$2...`) in the background and waits for it. Its stdin (fd 3 after the
/// shuffle) is the lifeline: on EOF the watcher marks the server as stopping and stops
/// postgres (immediate shutdown: the data is thrown away anyway). While the file `$1/down`
/// exists, a postgres that exited is not the end: the watchdog waits for the file to go and
/// starts postgres again on the same data directory and port ([`LocalServer::stop_postgres`]
/// and [`LocalServer::start_postgres`]). Whichever way it ends, the tail of the log goes to
/// stderr (our startup error message) and the directory `$1` is removed.
const WATCHDOG_SCRIPT: &str = r#"
dir=$1
shift
exec 3<&0 0</dev/null
(
    cat <&3 >/dev/null 2>&1
    : >"$dir/stopping"
    pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null)
    [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null
) >/dev/null 2>&1 &
watcher=$!
exec 3<&-
while :; do
    "$@" </dev/null >>"$dir/postgres.log" 2>&1 &
    pg=$!
    [ -e "$dir/stopping" ] && kill -QUIT "$pg" 2>/dev/null
    wait "$pg"
    status=$?
    [ -e "$dir/down" ] || break
    : >"$dir/paused"
    while [ -e "$dir/down" ] && [ ! -e "$dir/stopping" ]; do sleep 0.05; done
    rm -f "$dir/paused"
    [ -e "$dir/stopping" ] && break
done
kill "$watcher" 2>/dev/null
tail -c 4000 "$dir/postgres.log" >&2
rm -rf "$dir"
exit "$status"
"#;

#[derive(Debug, thiserror::Error)]
pub enum LocalServerError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH, in ${BIN_DIR_ENV} or \
         under /usr/lib/postgresql/*/bin; on Debian or Ubuntu install the `postgresql` \
         package (apt-get install postgresql)"
    )]
    BinariesNotFound,
    #[error(
        "running as root, but there is no `postgres` OS user to run the server as \
         (PostgreSQL refuses to run as root; Debian's `postgresql` package creates that user)"
    )]
    NoServerUser,
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb failed ({status}): {output}")]
    Initdb { status: ExitStatus, output: String },
    #[error("postgres exited during startup ({status}): {log}")]
    Exited { status: ExitStatus, log: String },
    #[error("postgres did not become ready within {0:?}")]
    Timeout(Duration),
}

impl LocalServerError {
    /// Short stable label (a metric label, a log field).
    pub fn label(&self) -> &'static str {
        match self {
            Self::BinariesNotFound => "local_pg_binaries_not_found",
            Self::NoServerUser => "local_pg_no_server_user",
            Self::Io { .. } => "local_pg_io",
            Self::Initdb { .. } => "local_pg_initdb",
            Self::Exited { .. } => "local_pg_exited",
            Self::Timeout(_) => "local_pg_timeout",
        }
    }
}

fn io_error(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalServerError {
    let action = action.into();
    move |source| LocalServerError::Io { action, source }
}

/// A server certificate and its private key (PEM) for [`LocalServer::start_with_tls`].
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    // The key is a secret: never in a debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// A running throw-away server. Stopped, and its directory removed, by [`LocalServer::stop`],
/// on drop, or when this process ends.
#[derive(Debug)]
pub struct LocalServer {
    port: u16,
    dir: PathBuf,
    bin_dir: PathBuf,
    watchdog: Child,
    /// Our end of the watchdog's stdin; closing it stops the server.
    lifeline: Option<ChildStdin>,
}

impl LocalServer {
    /// Create a cluster and start postgres; blocks until it accepts connections (about a
    /// second). Call from a blocking context (`spawn_blocking` in async code).
    pub fn start() -> Result<Self, LocalServerError> {
        Self::start_inner(None)
    }

    /// [`LocalServer::start`] with `ssl=on` and the given certificate; plain connections are
    /// still accepted (the client's `sslmode` decides).
    pub fn start_with_tls(tls: &ServerTls) -> Result<Self, LocalServerError> {
        Self::start_inner(Some(tls))
    }

    fn start_inner(tls: Option<&ServerTls>) -> Result<Self, LocalServerError> {
        let bin_dir = find_bin_dir()?;
        let run_as = server_user()?;
        let mut attempt = 1;
        loop {
            match start_once(&bin_dir, run_as, tls) {
                Err(LocalServerError::Exited { log, .. })
                    if attempt < START_ATTEMPTS && log.contains("could not bind") =>
                {
                    tracing::warn!(
                        attempt,
                        "local PostgreSQL lost its port to another process; retrying"
                    );
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// URL of database `dbname` (which must need no URL escaping) as the superuser.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// URL of the `postgres` maintenance database, for CREATE/DROP DATABASE.
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the cluster; gone once the server has stopped.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the server binaries in use (`pg_dump` and `psql` are usually there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Stop the server and wait until its directory is removed.
    pub fn stop(mut self) -> Result<(), LocalServerError> {
        self.shutdown()
    }

    /// Stop postgres (a fast shutdown: clients are disconnected) but keep the cluster, its
    /// data directory and port, until [`LocalServer::start_postgres`]: a database outage as
    /// clients see it. Blocks until the server is gone.
    #[cfg(feature = "test-support")]
    pub fn stop_postgres(&mut self) -> Result<(), LocalServerError> {
        let down = self.dir.join("down");
        std::fs::write(&down, b"").map_err(io_error(format!("create {}", down.display())))?;
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .map_err(io_error(format!("read {}", pid_file.display())))?;
        let pid = pid.lines().next().unwrap_or_default().trim().to_owned();
        let status = Command::new("kill")
            .args(["-INT", &pid])
            .stdin(Stdio::null())
            .status()
            .map_err(io_error("signal postgres"))?;
        if !status.success() {
            return Err(LocalServerError::Io {
                action: format!("signal postgres (pid {pid})"),
                source: std::io::Error::other(format!("kill exited with {status}")),
            });
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        // postgres removes its pid file last, once every backend has exited; the watchdog
        // then marks itself paused. Only after that may `down` go, or the watchdog would
        // take the exit for the end and stop for good.
        let paused = self.dir.join("paused");
        while pid_file.exists() || !paused.exists() {
            if Instant::now() > deadline {
                return Err(LocalServerError::Timeout(STARTUP_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::debug!(port = self.port, "local PostgreSQL stopped for a restart");
        Ok(())
    }

    /// Start postgres again after [`LocalServer::stop_postgres`], on the same data directory
    /// and port; blocks until it accepts connections.
    #[cfg(feature = "test-support")]
    pub fn start_postgres(&mut self) -> Result<(), LocalServerError> {
        let down = self.dir.join("down");
        std::fs::remove_file(&down).map_err(io_error(format!("remove {}", down.display())))?;
        self.wait_ready()?;
        tracing::debug!(port = self.port, "local PostgreSQL restarted");
        Ok(())
    }

    /// [`LocalServer::stop_postgres`] then [`LocalServer::start_postgres`].
    #[cfg(feature = "test-support")]
    pub fn restart_postgres(&mut self) -> Result<(), LocalServerError> {
        self.stop_postgres()?;
        self.start_postgres()
    }

    fn shutdown(&mut self) -> Result<(), LocalServerError> {
        if self.lifeline.take().is_some() {
            self.watchdog.wait().map_err(io_error("wait for the local PostgreSQL watchdog"))?;
            tracing::debug!(port = self.port, "local PostgreSQL stopped");
        }
        Ok(())
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            tracing::warn!(error = %err, "cannot stop the local PostgreSQL cleanly");
        }
    }
}

/// The OS user to run the server as: `None` = ourselves, `Some((uid, gid))` when we are root.
type RunAs = Option<(u32, u32)>;

fn start_once(
    bin_dir: &Path,
    run_as: RunAs,
    tls: Option<&ServerTls>,
) -> Result<LocalServer, LocalServerError> {
    let dir = TempDir::create(run_as)?;
    initdb(bin_dir, dir.path(), run_as)?;
    let tls_args = match tls {
        Some(tls) => write_tls_files(dir.path(), run_as, tls)?,
        None => Vec::new(),
    };
    let port = free_port()?;
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("poolkeeper-pg-watchdog")
        .arg(dir.path())
        .arg(bin_dir.join("postgres"))
        .arg("-D")
        .arg(dir.path().join("data"))
        .arg("-p")
        .arg(port.to_string())
        .arg("-h")
        .arg("127.0.0.1")
        .arg("-k")
        .arg(dir.path())
        // Throw-away data: durability buys nothing, and fsync dominates test time.
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
        // Many tests, each with a pool, share one server per test process.
        .args(["-c", "max_connections=300", "-c", "jit=off"])
        .args(&tls_args)
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    let mut watchdog = command.spawn().map_err(io_error("start the local PostgreSQL watchdog"))?;
    // From here on the watchdog owns (and removes) the directory.
    let dir = dir.release();
    let lifeline = watchdog.stdin.take();
    let mut server = LocalServer { port, dir, bin_dir: bin_dir.to_path_buf(), watchdog, lifeline };
    server.wait_ready()?;
    tracing::debug!(port, dir = %server.dir.display(), "local PostgreSQL started");
    Ok(server)
}

impl LocalServer {
    /// Poll until postgres reports "ready" in its pid file and accepts TCP connections.
    fn wait_ready(&mut self) -> Result<(), LocalServerError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let pid_file = self.dir.join("data").join("postmaster.pid");
        loop {
            if let Some(status) =
                self.watchdog.try_wait().map_err(io_error("poll the local PostgreSQL watchdog"))?
            {
                self.lifeline = None;
                let mut log = String::new();
                if let Some(mut stderr) = self.watchdog.stderr.take() {
                    // Best effort: the message is only decoration for the error.
                    let _ = stderr.read_to_string(&mut log);
                }
                return Err(LocalServerError::Exited { status, log: log.trim().to_owned() });
            }
            // Line 8 of postmaster.pid is the postmaster's status (`pg_ctl` reads it too).
            let ready = std::fs::read_to_string(&pid_file)
                .map(|text| text.lines().nth(7).map(str::trim) == Some("ready"))
                .unwrap_or(false);
            if ready && TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                // Dropping `self` closes the lifeline: the watchdog cleans up.
                return Err(LocalServerError::Timeout(STARTUP_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Writes the certificate and key next to the data directory (postgres wants the key private
/// to its own user) and returns the `-c` options that turn TLS on.
fn write_tls_files(
    dir: &Path,
    run_as: RunAs,
    tls: &ServerTls,
) -> Result<Vec<String>, LocalServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut args = vec!["-c".to_owned(), "ssl=on".to_owned()];
    for (name, contents, option) in [
        ("server.crt", &tls.cert_pem, "ssl_cert_file"),
        ("server.key", &tls.key_pem, "ssl_key_file"),
    ] {
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(format!("create {}", path.display())))?;
        file.write_all(contents.as_bytes())
            .map_err(io_error(format!("write {}", path.display())))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(io_error(format!("chown {}", path.display())))?;
        }
        args.push("-c".to_owned());
        args.push(format!("{option}={}", path.display()));
    }
    Ok(args)
}

fn initdb(bin_dir: &Path, dir: &Path, run_as: RunAs) -> Result<(), LocalServerError> {
    let mut command = Command::new(bin_dir.join("initdb"));
    command
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
        .current_dir(dir)
        .stdin(Stdio::null());
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    let output = command.output().map_err(io_error("run initdb"))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    Err(LocalServerError::Initdb { status: output.status, output: text.trim().to_owned() })
}

/// The directory holding `initdb` and `postgres`: `$POOLKEEPER_PG_BIN_DIR`, else the one
/// `initdb` on PATH resolves to, else the highest version under /usr/lib/postgresql.
fn find_bin_dir() -> Result<PathBuf, LocalServerError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) { Ok(dir) } else { Err(LocalServerError::BinariesNotFound) };
    }
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|path| {
        std::env::split_paths(&path)
            .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
            .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
            .collect::<Vec<_>>()
    });
    let mut debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<f64>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect::<Vec<_>>();
    debian.sort_by(|a, b| b.0.total_cmp(&a.0));
    on_path
        .chain(debian.into_iter().map(|(_, dir)| dir))
        .find(|dir| has_server(dir))
        .ok_or(LocalServerError::BinariesNotFound)
}

fn server_user() -> Result<RunAs, LocalServerError> {
    // /proc/self belongs to the effective uid; no libc call (and no unsafe) needed.
    let is_root = std::fs::metadata("/proc/self").map(|meta| meta.uid() == 0).unwrap_or(false);
    if !is_root {
        return Ok(None);
    }
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, SUPERUSER]).output().ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
        _ => Err(LocalServerError::NoServerUser),
    }
}

fn free_port() -> Result<u16, LocalServerError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_error("find a free port"))?;
    let addr = listener.local_addr().map_err(io_error("find a free port"))?;
    Ok(addr.port())
}

/// Where cluster directories go: `$POOLKEEPER_LOCAL_PG_DIR`, else /dev/shm when it is a
/// roomy tmpfs (creating a database there takes ~20 ms instead of ~300 ms on disk, and every
/// test creates one), else the system temporary directory.
fn parent_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PARENT_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && shm_is_roomy() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

fn shm_is_roomy() -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|mounts| roomy_shm_in(&mounts))
}

/// Whether `mounts` (/proc/mounts) has /dev/shm as a tmpfs of at least 1 GiB. Containers
/// often mount 64 MiB there: too small for a cluster and its databases.
fn roomy_shm_in(mounts: &str) -> bool {
    const MIN_BYTES: u64 = 1 << 30;
    let options = mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "/dev/shm", "tmpfs", options, ..] => Some(*options),
            _ => None,
        }
    });
    let Some(options) = options else { return false };
    // No size option: the kernel's default, half of the memory.
    options.split(',').find_map(|option| option.strip_prefix("size=")).is_none_or(|size| {
        let split = size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len());
        let (digits, unit) = size.split_at(split);
        let unit_bytes: u64 = match unit {
            "" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            _ => return false,
        };
        digits.parse::<u64>().is_ok_and(|n| n.saturating_mul(unit_bytes) >= MIN_BYTES)
    })
}

/// The cluster directory until the watchdog takes it over; removed if startup fails first.
struct TempDir {
    path: PathBuf,
    armed: bool,
}

impl TempDir {
    fn create(run_as: RunAs) -> Result<Self, LocalServerError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let name = format!(
                "poolkeeper-pg-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let path = parent_dir().join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let dir = Self { path, armed: true };
                    if let Some((uid, gid)) = run_as {
                        std::os::unix::fs::chown(&dir.path, Some(uid), Some(gid))
                            .map_err(io_error(format!("chown {}", dir.path.display())))?;
                    }
                    return Ok(dir);
                }
                // Left behind by an earlier process with our pid: pick another name.
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(io_error("create a temporary directory")(err)),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Hand the directory over: it is no longer removed on drop.
    fn release(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.armed {
            if let Err(err) = std::fs::remove_dir_all(&self.path) {
                tracing::warn!(dir = %self.path.display(), error = %err, "cannot remove a temporary directory");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::roomy_shm_in;

    #[test]
    fn shm_is_used_only_when_it_is_a_roomy_tmpfs() {
        let cases = [
            ("tmpfs /dev/shm tmpfs rw,relatime,size=24683656k 0 0", true),
            ("tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0", true),
            ("shm /dev/shm tmpfs rw,nosuid,nodev,noexec,relatime,size=65536k 0 0", false),
            ("tmpfs /dev/shm tmpfs rw,size=2g 0 0", true),
            ("tmpfs /dev/shm tmpfs rw,size=50% 0 0", false),
            ("/dev/vda /dev/shm ext4 rw 0 0", false),
            ("tmpfs /run tmpfs rw,size=4g 0 0", false),
        ];
        for (mounts, expected) in cases {
            assert_eq!(roomy_shm_in(mounts), expected, "{mounts}");
        }
    }
}
