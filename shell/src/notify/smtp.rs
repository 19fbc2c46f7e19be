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
#[error("--notifications-smtp-url: {0}")]
pub struct SmtpSetupError(#[from] lettre::transport::smtp::Error);

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl Smtp {
    pub fn new(config: SmtpConfig) -> Result<Self, SmtpSetupError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)?
            .timeout(Some(config.timeout))
            .build();
        Ok(Self { transport, from: config.from, timeout: config.timeout })
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
