//! A delivery method: the dispatcher knows methods only through this trait.

use futures_util::future::BoxFuture;

use super::message::{Message, Recipient};
use crate::db::enums::DeliveryMethod;

/// Why a send failed, as the method judges it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth another try: a timeout, a refused connection, a 5xx HTTP or 4xx SMTP reply.
    #[error("{0}")]
    Temporary(String),
    /// Trying again cannot help: a 4xx HTTP reply, a 5xx SMTP reply, a bad address.
    #[error("{0}")]
    Permanent(String),
}

impl SendError {
    pub fn outcome(&self) -> poolkeeper_core::notifications::Outcome {
        use poolkeeper_core::notifications::Outcome;
        match self {
            Self::Temporary(_) => Outcome::TemporaryFailure,
            Self::Permanent(_) => Outcome::PermanentFailure,
        }
    }
}

/// One way of delivering a message (webhook, SMTP).
pub trait Notifier: Send + Sync {
    fn method(&self) -> DeliveryMethod;

    /// Why this method cannot reach `recipient` at all (an e-mail method and a user without
    /// an address), or `None`.
    fn unreachable(&self, recipient: &Recipient) -> Option<&'static str> {
        let _ = recipient;
        None
    }

    /// Sends `message` once, within the method's own timeout.
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SendError>>;
}
