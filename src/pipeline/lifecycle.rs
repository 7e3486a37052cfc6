//! What both daemons do the same way to start and stop: serve `/metrics`
//! and wait for SIGINT or SIGTERM.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::connections::ConnectionStats;
use crate::metrics::{MetricsError, Readiness};

/// `/metrics` (and the readiness and liveness endpoints) on `endpoint`, if
/// one is configured, until `stop` turns true; returns its bound address
/// and its task.
pub async fn serve_metrics(
    endpoint: Option<SocketAddr>,
    registry: prometheus::Registry,
    ready: Readiness,
    stats: ConnectionStats,
    stop: &watch::Receiver<bool>,
) -> Result<(Option<SocketAddr>, Option<JoinHandle<std::io::Result<()>>>), MetricsError> {
    let Some(addr) = endpoint else {
        return Ok((None, None));
    };
    let listener = TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let serve = crate::metrics::serve(registry, ready, listener, stats, signal(stop));
    Ok((Some(bound), Some(tokio::spawn(serve))))
}

/// Resolves when `stop` turns true (or its sender is gone).
pub fn signal(stop: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|&s| s).await;
    }
}

/// Resolves on SIGINT or SIGTERM (SIGINT only where SIGTERM cannot be watched).
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
