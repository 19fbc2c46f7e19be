//! SIGINT and SIGTERM for every long-running command (`run`, `provisioner`, `demo`): the
//! first asks for a graceful stop, a second one exits at once.

use tokio_util::sync::CancellationToken;

/// First SIGINT/SIGTERM: cancel `shutdown` (the command finishes its current action and
/// exits 0), logging `stopping`. Second: exit 130 at once.
pub(crate) async fn watch_signals(
    mut signals: Signals,
    shutdown: CancellationToken,
    stopping: &'static str,
) {
    let mut received = 0;
    while signals.next().await {
        received += 1;
        if received == 1 {
            tracing::info!("{stopping}");
            shutdown.cancel();
        } else {
            std::process::exit(130);
        }
    }
}

/// SIGINT and SIGTERM, registered once for the whole run: a signal that arrives while the
/// first one is being handled is kept, not lost between two registrations.
pub(crate) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    pub(crate) fn register() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    pub(crate) fn register() -> std::io::Result<Self> {
        Ok(Self {})
    }

    /// The next signal; `false` once no more can arrive.
    #[cfg(unix)]
    pub(crate) async fn next(&mut self) -> bool {
        tokio::select! {
            received = self.interrupt.recv() => received.is_some(),
            received = self.terminate.recv() => received.is_some(),
        }
    }

    #[cfg(not(unix))]
    pub(crate) async fn next(&mut self) -> bool {
        tokio::signal::ctrl_c().await.is_ok()
    }
}
