//! A TCP proxy that injects network faults between a client and PostgreSQL: added latency,
//! connection resets, and freezes (connections stay open, nothing is forwarded, as with a
//! stuck middlebox or pooler). The mode applies to every connection, open or new; the
//! proxy can also reset the connections that send a given statement text (a connection lost
//! mid-query). It counts what it did, so a test can prove that the fault was reached.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // each test binary uses the faults it needs
pub enum Fault {
    /// Forward bytes as they come.
    Pass,
    /// Forward every chunk after this delay.
    Delay(Duration),
    /// Forward nothing and keep every connection open (new ones are accepted, then hang).
    Freeze,
    /// Reset every connection (RST), open and new: the database is down, as its clients
    /// see it.
    Reset,
}

/// What the proxy has done so far.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    pub connections: AtomicU64,
    pub resets: AtomicU64,
    /// Chunks held back while frozen (each is forwarded once the freeze ends).
    pub frozen_chunks: AtomicU64,
    pub delayed_chunks: AtomicU64,
    /// New connections reset at once, while in [`Fault::Reset`].
    pub refused: AtomicU64,
    /// Connections reset because they sent the text of [`FaultProxy::reset_when_sent`], or
    /// were sent that of [`FaultProxy::reset_when_replied`].
    pub resets_on_text: AtomicU64,
    /// Bytes forwarded from the server to its clients.
    pub server_bytes: AtomicU64,
}

/// What the connections share: the counts and the statement text to reset on.
#[derive(Debug, Default)]
struct Shared {
    counts: ProxyCounts,
    /// (text, how many more connections to reset when they send it).
    reset_on: Mutex<Option<(Vec<u8>, u64)>>,
    /// (text, how many more connections to reset when the server sends it to them).
    reset_on_reply: Mutex<Option<(Vec<u8>, u64)>>,
}

pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[allow(dead_code)] // each test binary uses the parts it needs
impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let (fault, _) = watch::channel(Fault::Pass);
        let shared = Arc::new(Shared::default());
        let accept =
            tokio::spawn(accept_loop(listener, upstream, fault.subscribe(), shared.clone()));
        FaultProxy { addr, fault, shared, accept }
    }

    /// A proxy in front of the PostgreSQL server of `url` (`postgres://user@host:port/db`).
    pub async fn for_url(url: &str) -> FaultProxy {
        FaultProxy::start(authority(url).1.parse().expect("host:port of the database URL")).await
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let (prefix, _, rest) = authority(url);
        format!("{prefix}{}{rest}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Resets the next `times` connections that send `text` (a statement's text, as sent in
    /// the protocol's Parse message).
    pub fn reset_when_sent(&self, text: &str, times: u64) {
        let mut rule = self.shared.reset_on.lock().unwrap_or_else(|p| p.into_inner());
        *rule = Some((text.as_bytes().to_vec(), times));
    }

    /// Resets the next `times` connections the server sends `text` to (a value in a row of a
    /// reply): the statement ran, and its client never hears how.
    pub fn reset_when_replied(&self, text: &str, times: u64) {
        let mut rule = self.shared.reset_on_reply.lock().unwrap_or_else(|p| p.into_inner());
        *rule = Some((text.as_bytes().to_vec(), times));
    }

    pub fn counts(&self) -> &ProxyCounts {
        &self.shared.counts
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Open connections end with their tasks once the sender is gone.
    }
}

/// Splits `scheme://user@host:port/rest` into (`scheme://user@`, `host:port`, `/rest`).
fn authority(url: &str) -> (&str, &str, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    (&url[..host_start], &url[host_start..end], &url[end..])
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: watch::Receiver<Fault>,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        shared.counts.connections.fetch_add(1, Ordering::Relaxed);
        if *fault.borrow() == Fault::Reset {
            shared.counts.refused.fetch_add(1, Ordering::Relaxed);
            #[allow(deprecated)] // nonblocking socket: linger 0 sends RST without blocking
            let _ = client.set_linger(Some(Duration::ZERO));
            continue;
        }
        let fault = fault.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let up = pipe(client_read, server_write, fault.clone(), Some(&shared), None);
            let down = pipe(server_read, client_write, fault, None, Some(&shared));
            // Either direction ending (close or reset) ends the connection.
            let reset = tokio::select! {
                reset = up => reset,
                reset = down => reset,
            };
            if reset {
                shared.counts.resets.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Copies one direction under the current fault; returns true when it reset the connection.
/// `upstream` (the client's direction only) carries the statement-text rule; `downstream`
/// (the server's direction only) the reply-text rule and the count of bytes forwarded.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    upstream: Option<&Shared>,
    downstream: Option<&Shared>,
) -> bool {
    let no_counts = ProxyCounts::default();
    let counts = upstream.map_or(&no_counts, |shared| &shared.counts);
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            changed = fault.changed() => {
                if changed.is_err() { return false; }
                if *fault.borrow() == Fault::Reset { return reset(from, to); }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if upstream.is_some_and(|shared| carries_reset_text(shared, &shared.reset_on, &buffer[..n]))
            || downstream.is_some_and(|shared| {
                carries_reset_text(shared, &shared.reset_on_reply, &buffer[..n])
            })
        {
            return reset(from, to);
        }
        loop {
            let current = *fault.borrow_and_update();
            match current {
                Fault::Pass => break,
                Fault::Delay(delay) => {
                    counts.delayed_chunks.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    break;
                }
                Fault::Reset => return reset(from, to),
                Fault::Freeze => {
                    counts.frozen_chunks.fetch_add(1, Ordering::Relaxed);
                    if fault.changed().await.is_err() {
                        return false;
                    }
                }
            }
        }
        if let Some(shared) = downstream {
            shared.counts.server_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return false;
        }
    }
}

/// Whether `chunk` carries the text of the reset rule `rule` (and the rule has resets left).
fn carries_reset_text(shared: &Shared, rule: &Mutex<Option<(Vec<u8>, u64)>>, chunk: &[u8]) -> bool {
    let mut rule = rule.lock().unwrap_or_else(|p| p.into_inner());
    let Some((text, times)) = rule.as_mut() else { return false };
    if *times == 0 || !chunk.windows(text.len()).any(|window| window == text.as_slice()) {
        return false;
    }
    *times -= 1;
    shared.counts.resets_on_text.fetch_add(1, Ordering::Relaxed);
    true
}

/// Closes with RST (linger 0) rather than FIN, as a crashed middlebox or a firewall does.
/// Both sockets close when the other direction's halves drop too (the caller's select).
/// Linger 0 cannot block here: the sockets are nonblocking.
#[allow(deprecated)]
fn reset(from: OwnedReadHalf, to: OwnedWriteHalf) -> bool {
    let _ = from.as_ref().set_linger(Some(Duration::ZERO));
    let _ = to.as_ref().set_linger(Some(Duration::ZERO));
    true
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn authority_splits_the_url() {
        assert_eq!(
            authority("postgres://pk@127.0.0.1:5432/db?x=1"),
            ("postgres://pk@", "127.0.0.1:5432", "/db?x=1")
        );
        assert_eq!(authority("postgres://h:1/d"), ("postgres://", "h:1", "/d"));
    }
}
