//! Connections from untrusted clients, for every server gent runs (OTLP gRPC and
//! HTTP, the link, `/metrics`). A client must not be able to hold sockets open
//! for free, so:
//!
//! - at most `max_connections` are open at once; beyond that the listener stops
//!   accepting (the kernel backlog holds the rest) until one closes, as Go's
//!   `netutil.LimitListener` does for the Collector;
//! - a connection with no request in flight for `idle_timeout` is closed. The
//!   clock runs from the end of the last request, or from the accept, so a client
//!   that sends nothing, trickles its headers or sits on a finished keep-alive
//!   connection is closed the same way; HTTP/2 pings do not keep it open;
//! - one request, body included, may take at most `request_timeout`
//!   (the servers apply it), so a slow body cannot hold a connection either.
//!
//! "In flight" is known from the request side: every server wraps its service in
//! [`TrackLayer`], which finds the connection's [`Tracker`] in the request's
//! extensions (put there as connect info) and marks the request active until its
//! response is ready.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Limits on the connections of one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Most connections open at once; further clients wait to be accepted.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest one request may take, from its headers to its response (body read
    /// included); slower requests are answered with a timeout.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// HTTP/2 (gRPC) keep-alive: a ping after this long without frames, and the
    /// connection is closed when it is not answered within `keepalive_timeout`;
    /// `null` sends no pings.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            max_connections: 1024,
            // The Collector's confighttp idle timeout.
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            keepalive_interval: Some(Duration::from_secs(30)),
            // grpc-go's server default.
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

impl ConnectionConfig {
    /// A link server's defaults: a push is answered after its window is
    /// regenerated and exported, which may take minutes.
    pub fn link() -> Self {
        ConnectionConfig { request_timeout: Duration::from_secs(600), ..Self::default() }
    }

    /// Reads a link server's section: fields left out keep [`Self::link`]'s
    /// values (a derived `default` would take [`Self::default`]'s, and a section
    /// written in part would lose the link's longer request timeout).
    pub fn deserialize_link<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Partial::deserialize(d).map(|p| p.over(Self::link()))
    }

    /// Says which setting is unusable and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("max_connections must be greater than 0".into());
        }
        for (name, value) in [("idle_timeout", self.idle_timeout), ("request_timeout", self.request_timeout)] {
            if value.is_zero() {
                return Err(format!("{name} must be longer than 0s"));
            }
        }
        Ok(())
    }
}

/// [`ConnectionConfig`] as written: each field present or not.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Partial {
    max_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    /// Absent (keep), `null` (no pings) or a duration.
    #[serde(default, deserialize_with = "present")]
    keepalive_interval: Option<Option<Duration>>,
    #[serde(default, with = "humantime_serde")]
    keepalive_timeout: Option<Duration>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Duration>>, D::Error> {
    humantime_serde::deserialize(d).map(Some)
}

impl Partial {
    fn over(self, base: ConnectionConfig) -> ConnectionConfig {
        ConnectionConfig {
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            idle_timeout: self.idle_timeout.unwrap_or(base.idle_timeout),
            request_timeout: self.request_timeout.unwrap_or(base.request_timeout),
            keepalive_interval: self.keepalive_interval.unwrap_or(base.keepalive_interval),
            keepalive_timeout: self.keepalive_timeout.unwrap_or(base.keepalive_timeout),
        }
    }
}

/// Where a server reports its connections.
#[derive(Clone)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: IntGauge,
    /// Connections closed because they were idle.
    pub idle_closed: IntCounter,
}

/// What a connection shares with the requests that arrive on it.
struct State {
    active: AtomicUsize,
    /// When the connection last became idle.
    idle_since: Mutex<Instant>,
    /// The reader waiting on the socket, woken when the last request ends so that
    /// the idle clock is re-armed at once.
    reader: Mutex<Option<Waker>>,
}

/// A connection's handle, found in each request's extensions.
#[derive(Clone)]
pub struct Tracker(Arc<State>);

impl Tracker {
    fn begin(&self) -> Active {
        self.0.active.fetch_add(1, Ordering::AcqRel);
        Active(self.0.clone())
    }
}

/// A request in flight; the connection is idle again when the last one drops.
struct Active(Arc<State>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.0.idle_since) = Instant::now();
            if let Some(waker) = lock(&self.0.reader).take() {
                waker.wake();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A tonic server builder with `config`'s request timeout and HTTP/2 keep-alive.
pub fn grpc_server(config: &ConnectionConfig) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .http2_keepalive_interval(config.keepalive_interval)
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
}

/// Serves `router` over HTTP/1.1 and HTTP/2 until `shutdown` resolves, then
/// finishes the requests in flight. `malformed` hears of every request hyper
/// refused before it reached the router (hyper answers those 400 itself: bad
/// bytes in a header, a line that is not HTTP), so that they can be counted.
pub async fn serve_http(
    listener: Listener,
    router: axum::Router,
    config: &ConnectionConfig,
    malformed: impl Fn(&hyper::Error) + Clone + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let connection = tokio::select! {
            connection = listener.next() => connection,
            () = &mut shutdown => break,
        };
        let tracker = connection.tracker();
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(tracker.clone());
            tower::ServiceExt::oneshot(router.clone(), request.map(axum::body::Body::new))
        });
        let served = graceful.watch(builder.serve_connection(TokioIo::new(connection), service).into_owned());
        let malformed = malformed.clone();
        tokio::spawn(async move {
            if let Err(e) = served.await {
                match e.downcast_ref::<hyper::Error>() {
                    Some(e) if e.is_parse() => malformed(e),
                    _ => tracing::debug!(error = %e, "connection ended with an error"),
                }
            }
        });
    }
    graceful.shutdown().await;
}

/// A listener that holds at most `max_connections` open and hands out
/// [`Connection`]s that close themselves when idle.
pub struct Listener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
    stats: ConnectionStats,
}

impl Listener {
    pub fn new(inner: TcpListener, config: &ConnectionConfig, stats: ConnectionStats) -> Self {
        Listener {
            inner,
            permits: Arc::new(Semaphore::new(config.max_connections.max(1))),
            idle_timeout: config.idle_timeout,
            stats,
        }
    }

    /// The next connection, once there is room for it.
    pub async fn next(&self) -> Connection {
        // The semaphore is never closed, so a permit always comes.
        let permit = self.permits.clone().acquire_owned().await.ok();
        loop {
            match self.inner.accept().await {
                Ok((stream, _peer)) => {
                    // Small OTLP responses must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    return Connection::new(stream, permit, self.idle_timeout, self.stats.clone());
                }
                // Out of file descriptors and the like: wait rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The connections as a stream, for tonic.
    pub fn incoming(self) -> impl tokio_stream::Stream<Item = io::Result<Connection>> + Send + 'static {
        let this = Arc::new(self);
        futures_util::stream::unfold(this, |this| async move {
            let next = this.next().await;
            Some((Ok(next), this))
        })
    }
}

/// An accepted socket that fails its reads once it has been idle too long.
pub struct Connection {
    stream: TcpStream,
    state: Arc<State>,
    idle_timeout: Duration,
    clock: Pin<Box<Sleep>>,
    stats: ConnectionStats,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Connection {
    fn new(stream: TcpStream, permit: Option<OwnedSemaphorePermit>, idle_timeout: Duration, stats: ConnectionStats) -> Self {
        stats.open.inc();
        let now = Instant::now();
        let state = Arc::new(State { active: AtomicUsize::new(0), idle_since: Mutex::new(now), reader: Mutex::new(None) });
        let clock = Box::pin(tokio::time::sleep_until(now + idle_timeout));
        Connection { stream, state, idle_timeout, clock, stats, _permit: permit }
    }

    pub fn tracker(&self) -> Tracker {
        Tracker(self.state.clone())
    }

    /// Ready with an error once the connection has been idle for the timeout;
    /// otherwise arms the clock for the moment it would be.
    ///
    /// This runs on every read that finds the socket empty, so the busy case
    /// stays cheap: while a request is in flight no clock is needed (the last
    /// request's end wakes the reader, which then arms it), and the waker is
    /// cloned only when it changed. Resetting the timer on every such read cost
    /// a timer-wheel update per read under load.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            {
                let mut reader = lock(&self.state.reader);
                if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *reader = Some(cx.waker().clone());
                }
            }
            // Read after the waker is stored: a request ending now still wakes us.
            if self.state.active.load(Ordering::Acquire) > 0 {
                return Poll::Pending;
            }
            let deadline = *lock(&self.state.idle_since) + self.idle_timeout;
            if deadline <= Instant::now() {
                self.stats.idle_closed.inc();
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle for longer than idle_timeout"));
            }
            if self.clock.deadline() != deadline {
                self.clock.as_mut().reset(deadline);
            }
            if self.clock.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stats.open.dec();
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = Tracker;

    fn connect_info(&self) -> Tracker {
        self.tracker()
    }
}

/// Marks each request active on its connection until its response is ready.
#[derive(Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

#[derive(Clone)]
pub struct Track<S> {
    inner: S,
}

impl<S, B> tower::Service<axum::http::Request<B>> for Track<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let extensions = request.extensions();
        let tracker = extensions
            .get::<Tracker>()
            .or_else(|| extensions.get::<tonic::transport::server::TlsConnectInfo<Tracker>>().map(|t| t.get_ref()));
        let active = tracker.map(Tracker::begin);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(active);
            response
        })
    }
}
