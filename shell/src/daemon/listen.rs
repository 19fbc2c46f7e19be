//! A dedicated LISTEN connection on the preset channel that wakes the prebuild loop.
//! It reconnects with capped backoff; after every (re)connect it wakes the loop once, since
//! notifications sent while disconnected are lost. The loop's interval poll remains the
//! safety net.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::RunQueryDsl;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::pool::SessionSettings;
use crate::db::PRESET_CHANNEL;

const MAX_DELAY: Duration = Duration::from_secs(30);

pub(super) async fn listen_presets(url: String, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut delay = Duration::from_secs(1);
    while !shutdown.is_cancelled() {
        match super::leader::connect(&url, &SessionSettings::for_role("listen")).await {
            Ok(mut conn) => {
                let listen = format!("LISTEN {PRESET_CHANNEL}");
                match diesel::sql_query(listen).execute(&mut conn).await {
                    Ok(_) => {
                        delay = Duration::from_secs(1);
                        wake.notify_one();
                        let mut stream = std::pin::pin!(conn.notifications_stream());
                        loop {
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                item = stream.next() => match item {
                                    Some(Ok(_)) => wake.notify_one(),
                                    Some(Err(err)) => {
                                        tracing::warn!(error = %err, "preset listener failed");
                                        break;
                                    }
                                    None => break,
                                },
                            }
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot LISTEN for preset changes"),
                }
            }
            Err(err) => tracing::warn!(error = %err, "preset listener cannot connect"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_DELAY);
    }
}
