//! The one LISTEN loop: a dedicated connection registered on a channel, turning NOTIFYs into
//! callbacks. It reconnects with capped exponential backoff, and calls `on_listening` after
//! every (re)connect, since notifications sent while disconnected are lost: the caller wakes
//! its loop then (its periodic poll is the safety net either way).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

/// Retry delays after a failed or lost LISTEN connection.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

/// Runs until `shutdown`: connects with `connect`, LISTENs on `channel`, calls
/// `on_listening` once registered and `on_notification` with each payload.
pub async fn listen_loop<C, F, E>(
    channel: &str,
    mut connect: C,
    mut on_listening: impl FnMut(),
    mut on_notification: impl FnMut(&str),
    backoff: Backoff,
    shutdown: CancellationToken,
) where
    C: FnMut() -> F,
    F: Future<Output = Result<AsyncPgConnection, E>>,
    E: Display,
{
    let mut delay = backoff.first;
    while !shutdown.is_cancelled() {
        match register(channel, &mut connect).await {
            Ok(mut conn) => {
                delay = backoff.first;
                tracing::debug!(channel, "listening");
                on_listening();
                let mut stream = std::pin::pin!(conn.notifications_stream());
                loop {
                    let item = tokio::select! {
                        () = shutdown.cancelled() => return,
                        item = stream.next() => item,
                    };
                    match item {
                        Some(Ok(notification)) => on_notification(&notification.payload),
                        Some(Err(err)) => {
                            tracing::warn!(channel, error = %err, "LISTEN connection failed");
                            break;
                        }
                        None => {
                            tracing::warn!(channel, "LISTEN connection closed");
                            break;
                        }
                    }
                }
            }
            Err(err) => tracing::warn!(channel, error = %err,
                backoff_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "cannot LISTEN; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// A connection registered on `channel`.
async fn register<C, F, E>(channel: &str, connect: &mut C) -> Result<AsyncPgConnection, String>
where
    C: FnMut() -> F,
    F: Future<Output = Result<AsyncPgConnection, E>>,
    E: Display,
{
    let mut conn = connect().await.map_err(|err| err.to_string())?;
    // The channel is one of the crate's constants, never input: an identifier, not a bind.
    diesel::sql_query(format!("LISTEN {channel}"))
        .execute(&mut conn)
        .await
        .map_err(|err| err.to_string())?;
    Ok(conn)
}
