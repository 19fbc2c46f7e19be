//! A TCP proxy in front of the test PostgreSQL, for fault tests: it can refuse and reset
//! every connection (the database is down, as the clients behind it see it), or reset a
//! connection when it carries a given statement text (a connection lost mid-query). Each
//! test file includes it with `#[path]`.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use poolkeeper::provisioner::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Shared {
    down: AtomicBool,
    /// Cancelled (and replaced) to reset every open connection.
    generation: Mutex<CancellationToken>,
    /// (text, how many more connections to reset when they send it).
    reset_on: Mutex<Option<(Vec<u8>, usize)>>,
    resets_on_text: AtomicUsize,
    refused: AtomicUsize,
}

#[derive(Clone)]
pub struct TcpProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl TcpProxy {
    /// A proxy on a free loopback port forwarding to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            down: AtomicBool::new(false),
            generation: Mutex::new(CancellationToken::new()),
            reset_on: Mutex::new(None),
            resets_on_text: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        });
        let accepting = shared.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accepting.down.load(Ordering::SeqCst) {
                    accepting.refused.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let token = accepting.generation.lock().expect("proxy lock").clone();
                tokio::spawn(forward(client, target_port, token, accepting.clone()));
            }
        });
        Self { port, shared }
    }

    /// `url` (of the test server) with its port replaced by the proxy's.
    pub fn url(&self, url: &str, server_port: u16) -> String {
        url.replace(&format!(":{server_port}/"), &format!(":{}/", self.port))
    }

    /// Reset every open connection and refuse new ones until [`TcpProxy::up`].
    pub fn down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        let mut generation = self.shared.generation.lock().expect("proxy lock");
        generation.cancel();
        *generation = CancellationToken::new();
    }

    pub fn up(&self) {
        self.shared.down.store(false, Ordering::SeqCst);
    }

    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Reset the next `times` connections that send `text` (a statement's text, as sent
    /// in the protocol's Parse message).
    pub fn reset_when_sent(&self, text: &str, times: usize) {
        *self.shared.reset_on.lock().expect("proxy lock") = Some((text.as_bytes().to_vec(), times));
    }

    /// How many connections [`TcpProxy::reset_when_sent`] has reset.
    pub fn resets_on_text(&self) -> usize {
        self.shared.resets_on_text.load(Ordering::SeqCst)
    }

    /// How many connections were refused while down.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

async fn forward(
    client: TcpStream,
    target_port: u16,
    reset: CancellationToken,
    shared: Arc<Shared>,
) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if should_reset(&shared, &buf[..n]) {
                return;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    // Whichever side ends (or a reset) drops both halves of both sockets.
    tokio::select! {
        () = reset.cancelled() => {}
        () = upstream => {}
        () = downstream => {}
    }
}

fn should_reset(shared: &Shared, chunk: &[u8]) -> bool {
    let mut rule = shared.reset_on.lock().expect("proxy lock");
    let Some((text, times)) = rule.as_mut() else { return false };
    if *times == 0 || !chunk.windows(text.len()).any(|w| w == text.as_slice()) {
        return false;
    }
    *times -= 1;
    shared.resets_on_text.fetch_add(1, Ordering::SeqCst);
    true
}
