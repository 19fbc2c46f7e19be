//! A real HTTP receiver for webhook notifications on an ephemeral loopback port: it
//! records every request (headers and body), verifies the HMAC-SHA256 signature with its
//! own copy of the secret, and answers from a script (a status, or a hang), the last entry
//! repeating. (Included with `#[path]`.)
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// Never answer (for a minute, longer than any test's timeout).
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub idempotency_key: Option<String>,
    pub event: Option<String>,
    pub signature_valid: bool,
    pub body: serde_json::Value,
    pub reply: Reply,
}

#[derive(Default)]
struct Inner {
    secret: String,
    script: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
    hung: AtomicUsize,
    delay: Mutex<Duration>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    /// Serves `POST /hook`, answering by `script` (its last entry repeats).
    pub async fn start(secret: &str, script: &[Reply]) -> Receiver {
        let inner = Arc::new(Inner {
            secret: secret.to_owned(),
            script: Mutex::new(script.iter().copied().collect()),
            ..Inner::default()
        });
        let app = Router::new().route("/hook", post(hook)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, inner, server }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every answered or hanging request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().expect("received").clone()
    }

    /// Requests that were left hanging.
    pub fn hung(&self) -> usize {
        self.inner.hung.load(Ordering::SeqCst)
    }

    /// Delay every answer by `delay` (to make concurrent dispatchers overlap).
    pub fn set_delay(&self, delay: Duration) {
        *self.inner.delay.lock().expect("delay") = delay;
    }

    /// Waits (bounded) until `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) {
        for _ in 0..1000 {
            if self.received().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the receiver got {} requests, expected {n}", self.received().len());
    }
}

async fn hook(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let reply = {
        let mut script = inner.script.lock().expect("script");
        match script.len() {
            0 => Reply::Status(200),
            1 => script[0],
            _ => script.pop_front().unwrap_or(Reply::Status(200)),
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut mac = Hmac::<Sha256>::new_from_slice(inner.secret.as_bytes()).expect("hmac key");
    mac.update(&body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let signature_valid =
        header("x-poolkeeper-signature-256").is_some_and(|s| s == format!("sha256={expected}"));
    inner.received.lock().expect("received").push(Received {
        idempotency_key: header("idempotency-key"),
        event: header("x-poolkeeper-event"),
        signature_valid,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        reply,
    });
    let delay = *inner.delay.lock().expect("delay");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).expect("status"),
        Reply::Hang => {
            inner.hung.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK
        }
    }
}
