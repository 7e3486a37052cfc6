//! The link's sections of the configuration: `pipeline.link` of the
//! compressor's (the client) and `link` of the decompressor's (the server).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::link::ClientSettings;
use crate::connections::ConnectionConfig;

/// A bearer token that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {field}: the token file is empty")]
    Empty { path: PathBuf, field: &'static str },
}

/// The token given inline, or else read (trimmed) from `file`; `field`
/// names the file's setting in errors.
fn secret(inline: Option<&str>, file: Option<&Path>, field: &'static str) -> Result<Option<String>, TokenError> {
    match (inline, file) {
        (Some(t), _) => Ok(Some(t.to_string())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read { path: path.into(), source })?;
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(TokenError::Empty { path: path.into(), field });
            }
            Ok(Some(token))
        }
        (None, None) => Ok(None),
    }
}

/// Where packets go, and how they survive an outage of the decompressor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkClientConfig {
    /// The decompressor's link address (`http://` or, with `tls`, `https://`).
    pub endpoint: String,
    /// Names this compressor to the decompressor (default: the host name); each
    /// run adds its start time, so window ids never repeat across restarts.
    pub producer: Option<String>,
    /// Bearer token sent with every push; `token_file` reads it from a file instead.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate to verify the decompressor with (turns TLS on);
    /// `tls_domain` overrides the name checked in its certificate.
    pub tls_ca_file: Option<PathBuf>,
    pub tls_domain: Option<String>,
    /// Folder holding packets not yet acknowledged; they survive restarts.
    pub spool_dir: PathBuf,
    /// Most bytes spooled; when full, training waits (and the receiver pushes back).
    pub spool_max_bytes: u64,
    /// Retry back-off: first wait, doubled per failure up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Deadline of one push of a small window; a larger one gets a second
    /// more per 50,000 spans (the decompressor answers once it has exported
    /// the whole window: 300 s for 9,000,000 spans).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// At shutdown, how long to keep trying to deliver spooled packets before
    /// leaving them on disk for the next start.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for LinkClientConfig {
    fn default() -> Self {
        LinkClientConfig {
            endpoint: "http://127.0.0.1:4320".into(),
            producer: None,
            token: None,
            token_file: None,
            tls_ca_file: None,
            tls_domain: None,
            spool_dir: "spool".into(),
            spool_max_bytes: 1 << 30,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl LinkClientConfig {
    /// The token from `token` or `token_file`.
    pub fn token(&self) -> Result<Option<String>, TokenError> {
        secret(self.token.as_deref(), self.token_file.as_deref(), "pipeline.link.token_file")
    }

    /// What the link client needs of these settings, the token read.
    pub fn settings(&self) -> Result<ClientSettings, TokenError> {
        Ok(ClientSettings {
            endpoint: self.endpoint.clone(),
            token: self.token()?,
            tls_ca_file: self.tls_ca_file.clone(),
            tls_domain: self.tls_domain.clone(),
            timeout: self.timeout,
        })
    }
}

/// The decompressor's end of the link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkServerConfig {
    /// gRPC `PacketService` listen address.
    pub listen: SocketAddr,
    /// When set (inline or from a file), pushes without `authorization: Bearer <token>` are refused.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain and private key: serve TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Largest packet accepted, bytes.
    pub max_packet_bytes: usize,
    /// Most spans one packet may regenerate (its header's count, checked
    /// before any generation): a packet is untrusted even behind a token.
    pub max_window_spans: u64,
    /// Most spans of one trace a packet may regenerate (its largest
    /// topology, checked before any generation): a trace is generated whole.
    /// At least the compressor's `window.max_spans_per_trace`.
    pub max_trace_spans: u64,
    /// Most pushes read at once (each up to `max_packet_bytes`); more wait.
    pub max_concurrent_pushes: usize,
    /// How many (producer, window) ids are remembered to acknowledge a repeated push
    /// without regenerating it again.
    pub remember_windows: usize,
    /// Connection limits and timeouts; `request_timeout` covers regenerating and
    /// exporting the window (default 10 minutes).
    #[serde(default = "ConnectionConfig::link", deserialize_with = "ConnectionConfig::deserialize_link")]
    pub connections: ConnectionConfig,
}

impl Default for LinkServerConfig {
    fn default() -> Self {
        LinkServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 4320)),
            token: None,
            token_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            max_packet_bytes: 64 << 20,
            max_window_spans: crate::codec::DEFAULT_MAX_SPANS,
            max_trace_spans: crate::codec::DEFAULT_MAX_TRACE_SPANS,
            max_concurrent_pushes: 4,
            remember_windows: 100_000,
            connections: ConnectionConfig::link(),
        }
    }
}

impl LinkServerConfig {
    pub fn token(&self) -> Result<Option<String>, TokenError> {
        secret(self.token.as_deref(), self.token_file.as_deref(), "link.token_file")
    }
}
