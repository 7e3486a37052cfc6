//! Drains the spool over the link: oldest packet first, retried with
//! exponential back-off until the decompressor acknowledges it. A packet the
//! decompressor calls invalid is set aside (it would fail forever); every other
//! failure — down, unreachable, overloaded, a wrong token being fixed — is
//! retried, because the spool holds the packet safely meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::Code;

use super::link::{self, ClientSettings, LinkError, PacketServiceClient};
use super::spool::{Spool, SpoolError};
use crate::metrics::PipelineMetrics;

#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

#[derive(Debug, Clone)]
pub struct SenderSettings {
    pub link: ClientSettings,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

/// When the sender stops: `stop` set means "deliver what is spooled, then
/// stop"; `abandon` set means "stop now" (what is left stays spooled).
pub struct Stop {
    pub drain: watch::Receiver<bool>,
    pub abandon: watch::Receiver<bool>,
}

/// The slowest regeneration and export the deadline of a push allows for:
/// the decompressor answers only once it has exported the whole window.
const MIN_SPANS_PER_SECOND: u64 = 50_000;

/// How long a push of a window of `spans` spans may take: `timeout`, plus a
/// second per [`MIN_SPANS_PER_SECOND`] spans (a fixed deadline would cut
/// off, and so retry from scratch, every large window on a slow decompressor).
pub fn push_deadline(timeout: Duration, spans: u64) -> Duration {
    timeout + Duration::from_secs(spans / MIN_SPANS_PER_SECOND)
}

/// Runs until told to stop.
pub async fn run(
    spool: Arc<Spool>,
    settings: SenderSettings,
    metrics: PipelineMetrics,
    mut stop: Stop,
) -> Result<(), SenderError> {
    let mut client = PacketServiceClient::new(link::channel(&settings.link)?);
    let token = settings.link.token.clone();
    let mut backoff = settings.retry_initial;
    loop {
        if *stop.abandon.borrow() {
            return Ok(());
        }
        let next = {
            let spool = spool.clone();
            tokio::task::spawn_blocking(move || spool.oldest())
                .await
                .map_err(|e| SpoolError::Io { path: "spool".into(), source: std::io::Error::other(e.to_string()) })??
        };
        let Some((seq, push)) = next else {
            if *stop.drain.borrow() {
                return Ok(());
            }
            tokio::select! {
                _ = spool.arrived.notified() => {}
                _ = stop.drain.changed() => {}
                _ = stop.abandon.changed() => {}
                // A packet put before we started waiting is not missed for long.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        };
        let (producer, window_id) = (push.producer.clone(), push.window_id);
        let deadline = push_deadline(settings.link.timeout, push.window_spans);
        let mut request = link::request(push, token.as_deref())?;
        // The decompressor sees the deadline too (grpc-timeout) and stops there.
        request.set_timeout(deadline);
        let outcome = match tokio::time::timeout(deadline, client.push(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!("no answer within {deadline:?}"))),
        };
        match outcome {
            Ok(response) => {
                spool.remove(seq)?;
                metrics.packets_sent.inc();
                backoff = settings.retry_initial;
                tracing::info!(producer, window = window_id, duplicate = response.get_ref().duplicate, "packet acknowledged");
            }
            Err(status) if status.code() == Code::InvalidArgument => {
                spool.set_aside(seq)?;
                metrics.packets_failed.inc();
                tracing::error!(
                    producer,
                    window = window_id,
                    error = status.message(),
                    "decompressor refused the packet as invalid; moved to the spool's rejected/ folder"
                );
            }
            Err(status) => {
                metrics.packets_retried.inc();
                let level_error = matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied);
                if level_error {
                    tracing::error!(window = window_id, error = status.message(), retry_in = ?backoff, "decompressor refused our credentials; retrying");
                } else {
                    tracing::warn!(window = window_id, code = ?status.code(), error = status.message(), retry_in = ?backoff, "push failed; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.abandon.changed() => {}
                }
                backoff = (backoff * 2).min(settings.retry_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_s_deadline_grows_with_its_window() {
        let base = Duration::from_secs(120);
        assert_eq!(push_deadline(base, 0), base);
        assert_eq!(push_deadline(base, 10_000), base);
        assert_eq!(push_deadline(base, 9_000_000), Duration::from_secs(300));
        assert_eq!(push_deadline(base, u64::MAX), base + Duration::from_secs(u64::MAX / MIN_SPANS_PER_SECOND));
    }
}
