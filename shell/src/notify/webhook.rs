//! The webhook method: a JSON POST per message, signed like GitHub's and Stripe's webhooks
//! (`X-Poolkeeper-Signature-256: sha256=<hex HMAC-SHA256 of the body>` with a shared
//! secret), with the message id as `Idempotency-Key` so that a receiver can drop a repeat
//! (a retry after a lost response, a dispatcher that died after sending).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

use super::message::{Message, Recipient};
use super::method::{Notifier, SendError};
use crate::db::enums::DeliveryMethod;

pub const SIGNATURE_HEADER: &str = "x-poolkeeper-signature-256";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
pub const EVENT_HEADER: &str = "x-poolkeeper-event";

/// Where and how to post.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: reqwest::Url,
    /// The HMAC key; the receiver holds the same.
    pub secret: String,
    /// The whole request, connection to the last byte of the response.
    pub timeout: Duration,
}

/// The body of every webhook request.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    pub id: Uuid,
    pub kind: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub user: &'a Recipient,
    pub workspace_id: Option<Uuid>,
    pub preset_id: Option<Uuid>,
    pub template_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

pub struct Webhook {
    config: WebhookConfig,
    client: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook's HTTP client: {0}")]
pub struct WebhookSetupError(#[from] reqwest::Error);

impl Webhook {
    pub fn new(config: WebhookConfig) -> Result<Self, WebhookSetupError> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("poolkeeper/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { config, client })
    }
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`): the signature header's value.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + digest.len() * 2);
    hex.push_str("sha256=");
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// How a reply's status is judged: 2xx delivered; 408, 429 and 5xx worth another try;
/// any other (a 4xx: the receiver refuses this request as it is) final.
pub fn judge_status(status: reqwest::StatusCode) -> Result<(), SendError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
    {
        Err(SendError::Temporary(format!("the receiver answered {status}")))
    } else {
        Err(SendError::Permanent(format!("the receiver answered {status}")))
    }
}

impl Notifier for Webhook {
    fn method(&self) -> DeliveryMethod {
        DeliveryMethod::Webhook
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let body = WebhookBody {
                id: message.id,
                kind: &message.kind,
                title: &message.rendered.title,
                body: &message.rendered.text,
                labels: &message.labels,
                user: &message.recipient,
                workspace_id: message.workspace_id,
                preset_id: message.preset_id,
                template_id: message.template_id,
                created_at: message.created_at,
            };
            let bytes = serde_json::to_vec(&body)
                .map_err(|err| SendError::Permanent(format!("cannot encode the body: {err}")))?;
            let request = self
                .client
                .post(self.config.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(IDEMPOTENCY_HEADER, message.id.to_string())
                .header(EVENT_HEADER, &message.kind)
                .header(SIGNATURE_HEADER, signature(self.config.secret.as_bytes(), &bytes))
                .body(bytes);
            // The client's own timeout bounds the request; this one also bounds a stall in
            // the connection pool.
            let response = tokio::time::timeout(self.config.timeout, request.send())
                .await
                .map_err(|_| SendError::Temporary(timed_out(self.config.timeout)))?
                .map_err(|err| {
                    SendError::Temporary(if err.is_timeout() {
                        timed_out(self.config.timeout)
                    } else {
                        format!("request failed: {}", error_chain(&err))
                    })
                })?;
            judge_status(response.status())
        })
    }
}

fn timed_out(after: Duration) -> String {
    format!("timed out after {}", humantime::format_duration(after))
}

/// An error and its causes, `: `-separated (reqwest's own message hides the cause).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 ("Jefe").
    #[test]
    fn signature_is_hex_hmac_sha256() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn statuses_are_judged() {
        use reqwest::StatusCode as S;
        assert_eq!(judge_status(S::OK), Ok(()));
        assert_eq!(judge_status(S::NO_CONTENT), Ok(()));
        for temporary in
            [S::INTERNAL_SERVER_ERROR, S::BAD_GATEWAY, S::TOO_MANY_REQUESTS, S::REQUEST_TIMEOUT]
        {
            assert!(matches!(judge_status(temporary), Err(SendError::Temporary(_))), "{temporary}");
        }
        for permanent in
            [S::BAD_REQUEST, S::UNAUTHORIZED, S::NOT_FOUND, S::GONE, S::MOVED_PERMANENTLY]
        {
            assert!(matches!(judge_status(permanent), Err(SendError::Permanent(_))), "{permanent}");
        }
    }
}
