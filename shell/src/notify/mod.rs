//! Notification delivery: the dispatcher, the methods (webhook, SMTP) behind one trait, and
//! the rendering of messages from the templates in `shell/templates/notifications/`.

mod dispatcher;
mod message;
mod method;
mod render;
mod smtp;
mod webhook;

pub use dispatcher::{DispatchConfig, Dispatcher, PassStats};
pub use message::{Message, Recipient};
pub use method::{Notifier, SendError};
pub use render::{render, Rendered};
pub use smtp::{Smtp, SmtpConfig, SmtpSetupError};
pub use webhook::{
    judge_status, signature, Webhook, WebhookConfig, WebhookSetupError, EVENT_HEADER,
    IDEMPOTENCY_HEADER, SIGNATURE_HEADER,
};
