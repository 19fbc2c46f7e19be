//! A small SMTP server on an ephemeral loopback port, a real protocol peer for the e-mail
//! method: EHLO/HELO, AUTH PLAIN (inline or after a 334), MAIL, RCPT, DATA (to the lone
//! dot), RSET, NOOP, QUIT. It captures each accepted message with its envelope and the
//! credentials it was sent with, and can refuse the first RCPTs with a 4xx or a 5xx reply.
//! [`SmtpServer::start_tls`] speaks it inside implicit TLS (SMTPS) with a given certificate.
//! (Included with `#[path]`.)
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf};
use tokio::net::TcpListener;

/// One message the server accepted.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    /// The AUTH PLAIN argument (base64 of `\0user\0password`), if the client authenticated.
    pub auth: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// Everything between DATA and the lone dot, CRLFs kept.
    pub data: String,
}

#[derive(Default)]
struct State {
    mails: Vec<Mail>,
    connections: usize,
    /// Replies to give to the next RCPTs instead of 250.
    rcpt_refusals: Vec<String>,
    refused: usize,
    tls_sessions: usize,
}

pub struct SmtpServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        Self::serve(None).await
    }

    /// SMTPS: every connection is TLS from its first byte, with this certificate and key.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> SmtpServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        // ring, as everywhere in the project (rustls deprecates it for lacking post-quantum
        // key exchange).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.lock().expect("state").connections += 1;
                let (state, tls) = (shared.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => session(stream, state).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                state.lock().expect("state").tls_sessions += 1;
                                session(stream, state).await;
                            }
                        }
                    }
                });
            }
        });
        SmtpServer { addr, state, server }
    }

    /// Connections that completed a TLS handshake.
    pub fn tls_sessions(&self) -> usize {
        self.state.lock().expect("state").tls_sessions
    }

    /// Answer the next RCPTs with these replies (`451 4.3.0 try later`, `550 5.1.1 no`).
    pub fn refuse_rcpt(&self, replies: &[&str]) {
        self.state.lock().expect("state").rcpt_refusals =
            replies.iter().map(|r| (*r).to_owned()).collect();
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.state.lock().expect("state").mails.clone()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().expect("state").connections
    }

    /// RCPTs refused so far.
    pub fn refused(&self) -> usize {
        self.state.lock().expect("state").refused
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(stream: S, state: Arc<Mutex<State>>) {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read);
    let mut mail = Mail::default();
    let mut auth = None;
    if write.write_all(b"220 localhost ESMTP test server\r\n").await.is_err() {
        return;
    }
    loop {
        let Some(line) = read_line(&mut lines).await else { return };
        let upper = line.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            "250-localhost\r\n250-AUTH PLAIN\r\n250-8BITMIME\r\n250 SMTPUTF8".to_owned()
        } else if upper.starts_with("HELO") {
            "250 localhost".to_owned()
        } else if upper.starts_with("AUTH PLAIN") {
            let inline = line["AUTH PLAIN".len()..].trim().to_owned();
            let credentials = if inline.is_empty() {
                if write.write_all(b"334 \r\n").await.is_err() {
                    return;
                }
                let Some(answer) = read_line(&mut lines).await else { return };
                answer
            } else {
                inline
            };
            auth = Some(credentials);
            "235 2.7.0 authenticated".to_owned()
        } else if upper.starts_with("MAIL FROM:") {
            mail = Mail { auth: auth.clone(), from: address(&line), ..Mail::default() };
            "250 2.1.0 ok".to_owned()
        } else if upper.starts_with("RCPT TO:") {
            let mut state = state.lock().expect("state");
            if state.rcpt_refusals.is_empty() {
                mail.to.push(address(&line));
                "250 2.1.5 ok".to_owned()
            } else {
                state.refused += 1;
                state.rcpt_refusals.remove(0)
            }
        } else if upper == "DATA" {
            if write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            loop {
                let Some(line) = read_line(&mut lines).await else { return };
                if line == "." {
                    break;
                }
                // Dot-stuffing (RFC 5321 4.5.2).
                data.push_str(
                    line.strip_prefix('.').filter(|_| line.starts_with("..")).unwrap_or(&line),
                );
                data.push_str("\r\n");
            }
            mail.data = data;
            state.lock().expect("state").mails.push(std::mem::take(&mut mail));
            "250 2.0.0 queued".to_owned()
        } else if upper == "RSET" {
            mail = Mail::default();
            "250 2.0.0 ok".to_owned()
        } else if upper == "NOOP" {
            "250 2.0.0 ok".to_owned()
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
            return;
        } else {
            "502 5.5.2 command not recognized".to_owned()
        };
        if write.write_all(format!("{reply}\r\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One line without its CRLF; `None` at the end of the stream or after 10 s of silence.
async fn read_line<S: AsyncRead>(lines: &mut BufReader<ReadHalf<S>>) -> Option<String> {
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_secs(10), lines.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => Some(line.trim_end_matches(['\r', '\n']).to_owned()),
        _ => None,
    }
}

/// The address of `MAIL FROM:<a@b>` or `RCPT TO:<a@b>` (parameters after it dropped).
fn address(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line[start..].find('>').map_or(line.len(), |i| start + i);
    line[start..end].to_owned()
}
