//! The delivery settings shared by `run`, `notifications dispatch` and
//! `notifications test`: which methods are configured, and how the dispatcher paces itself.

use std::sync::Arc;
use std::time::Duration;

use crate::notify::{DispatchConfig, Notifier, Smtp, SmtpConfig, Webhook, WebhookConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryArgs {
    /// POST every notification to this URL (JSON, HMAC-SHA256 signed; http or https).
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_WEBHOOK_URL")]
    pub notifications_webhook_url: Option<String>,
    /// The webhook's signing secret (the receiver verifies X-Poolkeeper-Signature-256).
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_WEBHOOK_SECRET", hide_env_values = true)]
    pub notifications_webhook_secret: Option<String>,
    /// Longest a webhook request may take.
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_WEBHOOK_TIMEOUT", value_parser = crate::cli::parse_duration, default_value = "10s")]
    pub notifications_webhook_timeout: Duration,
    /// E-mail notifications through this SMTP server: smtps://user:pass@host:465 (TLS),
    /// smtp://user:pass@host:587?tls=required (STARTTLS), smtp://host:25 (no TLS).
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_SMTP_URL", hide_env_values = true)]
    pub notifications_smtp_url: Option<String>,
    /// A PEM CA certificate to trust for the SMTP server besides the public roots (a relay
    /// with a private CA; the URL must ask for TLS).
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_SMTP_CA_FILE")]
    pub notifications_smtp_ca_file: Option<std::path::PathBuf>,
    /// The sender of notification e-mail ("Poolkeeper <noreply@example.com>").
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_SMTP_FROM")]
    pub notifications_smtp_from: Option<String>,
    /// Longest one SMTP conversation may take.
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_SMTP_TIMEOUT", value_parser = crate::cli::parse_duration, default_value = "30s")]
    pub notifications_smtp_timeout: Duration,
    /// Time between the dispatcher's passes over the outbox.
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_INTERVAL", value_parser = crate::cli::parse_duration, default_value = "10s")]
    pub notifications_interval: Duration,
    /// How long a leased message is one dispatcher's (longer than every method's timeout
    /// together); a dispatcher that dies leaves it to another after this.
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_LEASE", value_parser = crate::cli::parse_duration, default_value = "2m")]
    pub notifications_lease: Duration,
    /// Attempts before a message that keeps failing is given up (permanent_failure).
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub notifications_max_attempts: u32,
    /// First retry delay after a failed send; doubles per attempt, with jitter.
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_RETRY_DELAY", value_parser = crate::cli::parse_duration, default_value = "30s")]
    pub notifications_retry_delay: Duration,
    /// Largest retry delay.
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_MAX_RETRY_DELAY", value_parser = crate::cli::parse_duration, default_value = "1h")]
    pub notifications_max_retry_delay: Duration,
    /// Delete sent, failed and inhibited notifications older than this (0 = keep them).
    #[arg(long, env = "POOLKEEPER_NOTIFICATIONS_RETENTION", value_parser = crate::cli::parse_duration, default_value = "30d")]
    pub notifications_retention: Duration,
}

/// A delivery setting that cannot work, naming its flag.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryConfigError {
    #[error("--notifications-webhook-url: {0}")]
    WebhookUrl(String),
    #[error("--notifications-webhook-secret: required with --notifications-webhook-url")]
    MissingSecret,
    #[error("--notifications-smtp-from: required with --notifications-smtp-url")]
    MissingFrom,
    #[error("--notifications-smtp-from: {0}")]
    From(String),
    #[error(transparent)]
    SmtpUrl(#[from] crate::notify::SmtpSetupError),
    #[error(transparent)]
    Webhook(#[from] crate::notify::WebhookSetupError),
    #[error("--notifications-smtp-ca-file: {0}")]
    CaFile(String),
    #[error("--notifications-{0}: must be more than 0")]
    Zero(&'static str),
    #[error(
        "--notifications-lease: {lease} is not longer than the methods' timeouts together \
         ({needed}); a message would be leased again while it is still being sent"
    )]
    LeaseTooShort { lease: String, needed: String },
}

impl DeliveryArgs {
    /// The configured methods (none when no method flag is given).
    pub fn methods(&self) -> Result<Vec<Arc<dyn Notifier>>, DeliveryConfigError> {
        let mut methods: Vec<Arc<dyn Notifier>> = Vec::new();
        if let Some(url) = &self.notifications_webhook_url {
            let url: reqwest::Url = url.parse().map_err(|err| {
                DeliveryConfigError::WebhookUrl(format!("{url:?} is not a URL ({err})"))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(DeliveryConfigError::WebhookUrl(format!(
                    "{url} is not an http or https URL"
                )));
            }
            let secret = self
                .notifications_webhook_secret
                .clone()
                .filter(|s| !s.is_empty())
                .ok_or(DeliveryConfigError::MissingSecret)?;
            if self.notifications_webhook_timeout.is_zero() {
                return Err(DeliveryConfigError::Zero("webhook-timeout"));
            }
            let config = WebhookConfig { url, secret, timeout: self.notifications_webhook_timeout };
            methods.push(Arc::new(Webhook::new(config)?));
        }
        if let Some(url) = &self.notifications_smtp_url {
            let from =
                self.notifications_smtp_from.as_deref().ok_or(DeliveryConfigError::MissingFrom)?;
            let from = from
                .parse()
                .map_err(|err| DeliveryConfigError::From(format!("{from:?}: {err}")))?;
            if self.notifications_smtp_timeout.is_zero() {
                return Err(DeliveryConfigError::Zero("smtp-timeout"));
            }
            let ca_pem = match &self.notifications_smtp_ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|err| {
                    DeliveryConfigError::CaFile(format!("{}: {err}", path.display()))
                })?),
                None => None,
            };
            let config = SmtpConfig {
                url: url.clone(),
                from,
                timeout: self.notifications_smtp_timeout,
                ca_pem,
            };
            methods.push(Arc::new(Smtp::new(config)?));
        }
        Ok(methods)
    }

    /// The dispatcher's pacing, checked against the methods' timeouts.
    pub fn dispatch_config(&self) -> Result<DispatchConfig, DeliveryConfigError> {
        for (name, value) in [
            ("interval", self.notifications_interval),
            ("lease", self.notifications_lease),
            ("retry-delay", self.notifications_retry_delay),
            ("max-retry-delay", self.notifications_max_retry_delay),
        ] {
            if value.is_zero() {
                return Err(DeliveryConfigError::Zero(name));
            }
        }
        let mut needed = Duration::ZERO;
        if self.notifications_webhook_url.is_some() {
            needed += self.notifications_webhook_timeout;
        }
        if self.notifications_smtp_url.is_some() {
            needed += self.notifications_smtp_timeout;
        }
        if self.notifications_lease <= needed {
            return Err(DeliveryConfigError::LeaseTooShort {
                lease: humantime::format_duration(self.notifications_lease).to_string(),
                needed: humantime::format_duration(needed).to_string(),
            });
        }
        Ok(DispatchConfig {
            lease: self.notifications_lease,
            interval: self.notifications_interval,
            max_attempts: self.notifications_max_attempts,
            retry_delay: self.notifications_retry_delay,
            max_retry_delay: self.notifications_max_retry_delay.max(self.notifications_retry_delay),
            retention: Some(self.notifications_retention).filter(|r| !r.is_zero()),
            ..DispatchConfig::default()
        })
    }
}
