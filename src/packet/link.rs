//! The link: gRPC `PacketService` (proto/gent.proto), TLS through rustls and a
//! bearer token, shared by the compressor's sender and the decompressor's server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// The generated messages, client and server of proto/gent.proto.
pub mod proto {
    tonic::include_proto!("gent.link.v1");
}

pub use proto::packet_service_client::PacketServiceClient;
pub use proto::packet_service_server::{PacketService, PacketServiceServer};
pub use proto::{PayloadKind, PushRequest, PushResponse};

impl PayloadKind {
    /// How the link marks a payload: a model, or traces (raw or sampled alike;
    /// the decompressor forwards both as they are).
    pub fn of(payload: crate::codec::Payload) -> Self {
        if payload.is_traces() { PayloadKind::Traces } else { PayloadKind::Model }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("link endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("link TLS: {0}")]
    Tls(String),
    #[error("cannot listen for the link on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("link server: {0}")]
    Serve(String),
    #[error("the token is not valid in a header: {0}")]
    Token(String),
}

fn read(path: &Path) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|source| LinkError::Read { path: path.into(), source })
}

/// How the client reaches the decompressor.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub endpoint: String,
    pub token: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_domain: Option<String>,
    /// Deadline of a push of a small window (the sender lengthens it for
    /// large ones).
    pub timeout: Duration,
}

/// A lazily connected channel: it (re)connects on use, so a decompressor that
/// is down at start or restarts later costs retries, not a restart of ours.
pub fn channel(s: &ClientSettings) -> Result<Channel, LinkError> {
    let bad = |reason: String| LinkError::Endpoint { endpoint: s.endpoint.clone(), reason };
    let mut endpoint = Endpoint::from_shared(s.endpoint.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(ca) = &s.tls_ca_file {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let Some(domain) = &s.tls_domain {
            tls = tls.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| LinkError::Tls(e.to_string()))?;
    } else if s.endpoint.starts_with("https://") {
        endpoint = endpoint.tls_config(ClientTlsConfig::new().with_enabled_roots()).map_err(|e| LinkError::Tls(e.to_string()))?;
    }
    Ok(endpoint.connect_lazy())
}

/// `message` as a request carrying the bearer token.
pub fn request<T>(message: T, token: Option<&str>) -> Result<Request<T>, LinkError> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|e: tonic::metadata::errors::InvalidMetadataValue| LinkError::Token(e.to_string()))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// Refuses a request without the expected bearer token. The comparison takes the
/// same time wherever the first difference is, so the token cannot be guessed
/// byte by byte from response times.
pub fn authorize<T>(request: &Request<T>, token: Option<&str>) -> Result<(), Status> {
    let Some(expected) = token else { return Ok(()) };
    let given = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(Status::unauthenticated("the bearer token is wrong")),
        None => Err(Status::unauthenticated("a bearer token is required (authorization: Bearer <token>)")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The server's TLS identity from PEM files.
pub fn server_tls(cert: &Path, key: &Path) -> Result<ServerTlsConfig, LinkError> {
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?)))
}

/// What the link server holds its clients to.
pub struct ServerLimits {
    pub max_packet_bytes: usize,
    /// Pushes read at once.
    pub max_concurrent: usize,
    pub connections: crate::connections::ConnectionConfig,
    pub stats: crate::connections::ConnectionStats,
}

/// Serves `service` on `listener`. `admit` sees each push's headers before
/// its body is read (the bearer token is checked there, so an
/// unauthenticated client cannot make the server buffer a packet), and at
/// most `max_concurrent` pushes are read at once.
pub async fn serve<S: PacketService>(
    service: S,
    listener: tokio::net::TcpListener,
    tls: Option<ServerTlsConfig>,
    limits: ServerLimits,
    admit: impl tonic::service::Interceptor + Clone + Send + Sync + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), LinkError> {
    let ServerLimits { max_packet_bytes, max_concurrent, connections, stats } = limits;
    let incoming = crate::connections::Listener::new(listener, &connections, stats).incoming();
    let mut builder = crate::connections::grpc_server(&connections).concurrency_limit_per_connection(max_concurrent.max(1));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| LinkError::Tls(e.to_string()))?;
    }
    // Room for the request's other fields around the payload.
    let service = PacketServiceServer::new(service).max_decoding_message_size(max_packet_bytes.saturating_add(4096));
    builder
        .layer(crate::connections::TrackLayer)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(max_concurrent.max(1)))
        .add_service(tonic::service::interceptor::InterceptedService::new(service, admit))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| LinkError::Serve(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_must_match_exactly() {
        let with = |t: Option<&str>| request((), t).unwrap();
        assert!(authorize(&with(Some("s3cret")), Some("s3cret")).is_ok());
        assert!(authorize(&with(None), None).is_ok());
        for given in [None, Some("s3cre"), Some("s3cret2"), Some("S3cret")] {
            let status = authorize(&with(given), Some("s3cret")).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{given:?}");
        }
    }
}
