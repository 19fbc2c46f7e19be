//! The e-mail method (lettre over rustls with ring): one message per notification, with a
//! plain-text and an HTML part, from the configured sender to the user's address.
//!
//! The server is given as one URL, as lettre reads it: `smtps://user:pass@host:465`
//! (implicit TLS), `smtp://user:pass@host:587?tls=required` (STARTTLS, refused when the
//! server does not offer it), `smtp://host:25` (no TLS: a relay on the same host only).

use std::time::Duration;

use futures_util::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::message::{Message, Recipient};
use super::method::{Notifier, SendError};
use crate::db::enums::DeliveryMethod;

/// The SMTP server and the sender.
#[derive(Clone)]
pub struct SmtpConfig {
    /// `smtp[s]://[user:pass@]host[:port][?tls=required|opportunistic]`; holds the password.
    pub url: String,
    pub from: Mailbox,
    /// The whole conversation, connection to QUIT.
    pub timeout: Duration,
    /// A PEM CA certificate to trust for the server besides the public roots (a private
    /// relay); the URL must ask for TLS.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SmtpSetupError {
    #[error("--notifications-smtp-url: {0}")]
    Url(#[from] lettre::transport::smtp::Error),
    #[error("--notifications-smtp-ca-file: {0}")]
    Ca(String),
}

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl Smtp {
    pub fn new(config: SmtpConfig) -> Result<Self, SmtpSetupError> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)?
            .timeout(Some(config.timeout));
        if let Some(pem) = &config.ca_pem {
            builder = builder.tls(tls_trusting(&config.url, pem)?);
        }
        Ok(Self { transport: builder.build(), from: config.from, timeout: config.timeout })
    }

    fn email(&self, message: &Message, to: &str) -> Result<lettre::Message, SendError> {
        let to: Mailbox = to.parse().map_err(|err| {
            SendError::Permanent(format!("the user's e-mail address {to:?} is invalid: {err}"))
        })?;
        let to = Mailbox::new(Some(message.recipient.username.clone()), to.email);
        lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.rendered.title.clone())
            .message_id(Some(format!("<{}@poolkeeper>", message.id)))
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(message.rendered.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(message.rendered.html.clone()),
                    ),
            )
            .map_err(|err| SendError::Permanent(format!("cannot build the e-mail: {err}")))
    }
}

/// The TLS mode the URL asks for (as lettre reads it), trusting `ca_pem` as well as the
/// public roots.
fn tls_trusting(url: &str, ca_pem: &[u8]) -> Result<Tls, SmtpSetupError> {
    let ca = |message: String| SmtpSetupError::Ca(message);
    let parsed = reqwest::Url::parse(url).map_err(|err| ca(format!("the SMTP URL: {err}")))?;
    let host = parsed.host_str().ok_or_else(|| ca("the SMTP URL has no host".to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let certificate =
        Certificate::from_pem(ca_pem).map_err(|err| ca(format!("not a PEM certificate: {err}")))?;
    let parameters = TlsParameters::builder(host)
        .add_root_certificate(certificate)
        .build_rustls()
        .map_err(|err| ca(err.to_string()))?;
    let mode = parsed.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
    match (parsed.scheme(), mode.as_deref()) {
        ("smtps", _) => Ok(Tls::Wrapper(parameters)),
        ("smtp", Some("required")) => Ok(Tls::Required(parameters)),
        ("smtp", Some("opportunistic")) => Ok(Tls::Opportunistic(parameters)),
        _ => Err(ca("the SMTP URL asks for no TLS (use smtps:// or ?tls=required)".to_owned())),
    }
}

/// How lettre's error is judged: a 5xx reply is final, anything else (a 4xx reply, a
/// timeout, a connection or TLS failure) is worth another try.
fn judge(err: &lettre::transport::smtp::Error) -> SendError {
    let text = format!("SMTP: {err}");
    if err.is_permanent() {
        SendError::Permanent(text)
    } else {
        SendError::Temporary(text)
    }
}

impl Notifier for Smtp {
    fn method(&self) -> DeliveryMethod {
        DeliveryMethod::Smtp
    }

    fn unreachable(&self, recipient: &Recipient) -> Option<&'static str> {
        recipient.email.is_none().then_some("the user has no e-mail address")
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let Some(to) = &message.recipient.email else {
                return Err(SendError::Permanent("the user has no e-mail address".to_owned()));
            };
            let email = self.email(message, to)?;
            // lettre's timeout bounds each read and write; this one the whole conversation.
            match tokio::time::timeout(self.timeout, self.transport.send(email)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(judge(&err)),
                Err(_) => Err(SendError::Temporary(format!(
                    "SMTP: timed out after {}",
                    humantime::format_duration(self.timeout)
                ))),
            }
        })
    }
}
