//! Counting round trips: a loopback TCP proxy in front of the server that counts the
//! ReadyForQuery messages the server sends. Each one ends a client request (a simple query,
//! or an extended-protocol batch ending in Sync), so the count is the number of times the
//! client waited for the server — except a ReadyForQuery answering only statement closes
//! (CloseComplete): tokio-postgres sends those when it drops an unnamed prepared statement
//! and does not wait for them, so they are counted apart. Only for counting: timings are
//! taken without the proxy.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct RoundTrips {
    port: u16,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    waits: AtomicU64,
    closes: AtomicU64,
}

/// Counts since some earlier instant (see [`RoundTrips::since`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Requests the client waited for.
    pub waits: u64,
    /// Statement closes sent without waiting.
    pub closes: u64,
}

impl RoundTrips {
    /// A proxy to the server listening on loopback `server_port`.
    pub async fn start(server_port: u16) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("bind the round-trip counting proxy")?;
        let port = listener.local_addr().context("proxy address")?.port();
        let counts = Arc::new(Counts::default());
        let counter = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, server_port, counter.clone()));
            }
        });
        Ok(Self { port, counts, task })
    }

    /// URL of database `dbname` through the proxy (no TLS: the messages must be readable).
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}?sslmode=disable", self.port)
    }

    /// Counts so far, over every proxied connection.
    pub fn now(&self) -> Tally {
        Tally {
            waits: self.counts.waits.load(Ordering::SeqCst),
            closes: self.counts.closes.load(Ordering::SeqCst),
        }
    }

    /// Counts since `earlier` (a value of [`RoundTrips::now`]).
    pub fn since(&self, earlier: Tally) -> Tally {
        let now = self.now();
        Tally { waits: now.waits - earlier.waits, closes: now.closes - earlier.closes }
    }
}

impl Drop for RoundTrips {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server_port: u16, count: Arc<Counts>) {
    let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, server_port)).await else {
        return;
    };
    // Best effort: without NODELAY the proxy only adds latency, the counts stay right.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut server_write = server_write;
    tokio::select! {
        _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
        _ = forward_counting(server_read, &mut client_write, &count) => {}
    }
}

async fn forward_counting(
    mut from: OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    counts: &Counts,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut parser = Parser::default();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        // Counted before the client can see the message: a caller that has its answer also
        // sees the count.
        let (waits, closes) = parser.feed(&buf[..n]);
        counts.waits.fetch_add(waits, Ordering::SeqCst);
        counts.closes.fetch_add(closes, Ordering::SeqCst);
        to.write_all(&buf[..n]).await?;
    }
}

/// Splits the server's byte stream into messages (type byte, then a big-endian length that
/// counts itself) and counts the ReadyForQuery ('Z') ones: (waited for, closes only).
struct Parser {
    header: [u8; 5],
    filled: usize,
    skip: usize,
    /// Whether every message since the last ReadyForQuery was a CloseComplete ('3').
    only_closes: bool,
    any: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self { header: [0; 5], filled: 0, skip: 0, only_closes: true, any: false }
    }
}

impl Parser {
    fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut waits, mut closes) = (0, 0);
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.filled).min(data.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == 5 {
                match self.header[0] {
                    b'Z' => {
                        if self.any && self.only_closes {
                            closes += 1;
                        } else {
                            waits += 1;
                        }
                        self.only_closes = true;
                        self.any = false;
                    }
                    kind => {
                        self.any = true;
                        self.only_closes &= kind == b'3';
                    }
                }
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.skip = usize::try_from(len).unwrap_or(usize::MAX).saturating_sub(4);
                self.filled = 0;
            }
        }
        (waits, closes)
    }
}
