//! A dedicated LISTEN connection on the preset channel that wakes the prebuild loop (the
//! loop is `db::listen::listen_loop`). Every (re)connect wakes the loop once, since
//! notifications sent while disconnected are lost; the loop's interval poll remains the
//! safety net.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::listen::{listen_loop, Backoff};
use crate::db::pool::SessionSettings;
use crate::db::PRESET_CHANNEL;

const BACKOFF: Backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(30) };

pub(super) async fn listen_presets(url: String, wake: Arc<Notify>, shutdown: CancellationToken) {
    let session = SessionSettings::for_role("listen");
    listen_loop(
        PRESET_CHANNEL,
        || super::leader::connect(&url, &session),
        || wake.notify_one(),
        |_| wake.notify_one(),
        BACKOFF,
        shutdown,
    )
    .await;
}
