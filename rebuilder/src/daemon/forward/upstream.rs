//! The upstream (the analyzer) and how it is reached: [`ForwardConfig`] from the flags, the
//! URL, CA certificates, extra headers, and the [`Connector`] (TCP, and TLS with rustls for
//! https).

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::header::{HeaderName, HeaderValue};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Errors in the forwarding configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("upstream URL {0:?} is not a valid http:// or https:// URL")]
    Upstream(String),
    #[error("extra header {0:?} is not `Name: value`")]
    ExtraHeader(String),
    #[error("header name {0:?} is invalid")]
    HeaderName(String),
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
}

/// The upstream: scheme, authority and an optional path prefix.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Prepended to every request target ("" when the URL has no path).
    pub path_prefix: String,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Upstream, ConfigError> {
        let bad = || ConfigError::Upstream(url.to_string());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let scheme = uri.scheme().cloned().ok_or_else(bad)?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(bad());
        }
        let authority = uri.authority().cloned().ok_or_else(bad)?;
        if uri.query().is_some() || authority.as_str().contains('@') {
            return Err(bad());
        }
        let path_prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Upstream {
            scheme,
            authority,
            path_prefix,
        })
    }

    /// host:port for connection probes.
    pub fn host_port(&self) -> (String, u16) {
        let default = if self.scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        let host = self.authority.host();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (
            host.to_string(),
            self.authority.port_u16().unwrap_or(default),
        )
    }
}

/// How requests are rewritten and delivered.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub upstream: Upstream,
    /// Header that receives the client IP (the PROXY protocol source when there was a header,
    /// else the inner TCP source), written as configured; `None` = off.
    pub forwarded_for: Option<String>,
    /// Static headers, replacing same-named request headers.
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    pub queue_capacity: usize,
    pub queue_max_bytes: usize,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub failure_backoff: Duration,
    pub probe_interval: Duration,
    /// Requests written on a connection before their answers are read (HTTP/1.1 pipelining;
    /// 1 = one at a time).
    pub pipeline_depth: usize,
    /// How long a sender waits for more requests when its batch is not full.
    pub linger: Duration,
    /// CA certificates trusted for https (empty = the public web PKI roots).
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The source map, when requests carry their source as headers (`--source-headers`).
    pub source_headers: Option<std::sync::Arc<crate::sources::SharedSources>>,
}

impl ForwardConfig {
    pub fn from_args(a: &crate::daemon::config::RunArgs) -> Result<ForwardConfig, ConfigError> {
        let forwarded_for = if a.no_forwarded_for || a.forwarded_for_header.is_empty() {
            None
        } else {
            // Validated as a field name; written with the case it was given.
            HeaderName::from_bytes(a.forwarded_for_header.as_bytes())
                .map_err(|_| ConfigError::HeaderName(a.forwarded_for_header.clone()))?;
            Some(a.forwarded_for_header.clone())
        };
        let extra_headers = a
            .extra_headers
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| parse_extra_header(h))
            .collect::<Result<_, _>>()?;
        Ok(ForwardConfig {
            upstream: Upstream::parse(&a.upstream)?,
            forwarded_for,
            extra_headers,
            queue_capacity: a.queue_capacity.max(1),
            queue_max_bytes: a.queue_max_bytes.max(1),
            concurrency: a.concurrency.max(1),
            connect_timeout: Duration::from_millis(a.connect_timeout_ms.max(1)),
            request_timeout: Duration::from_millis(a.request_timeout_ms.max(1)),
            pool_idle_timeout: Duration::from_millis(a.pool_idle_timeout_ms.max(1)),
            failure_backoff: Duration::from_millis(a.failure_backoff_ms.max(1)),
            probe_interval: Duration::from_millis(a.health_probe_interval_ms.max(10)),
            pipeline_depth: a.pipeline_depth.max(1) as usize,
            linger: Duration::from_micros(a.forward_linger_us),
            ca_certs: match &a.upstream_ca_file {
                Some(p) => load_ca_file(p)?,
                None => Vec::new(),
            },
            source_headers: None,
        })
    }
}

fn load_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    let err = |reason: String| ConfigError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in it".into()));
    }
    Ok(certs)
}

pub(super) fn parse_extra_header(s: &str) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let bad = || ConfigError::ExtraHeader(s.to_string());
    let (name, value) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?,
        HeaderValue::from_str(value.trim()).map_err(|_| bad())?,
    ))
}

/// A byte stream to the upstream: plain TCP, or TLS over it.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open connection to the upstream.
pub(super) type Stream = Box<dyn Io>;

/// Dials the upstream: resolves its host at each connection (an ALB's addresses change),
/// connects over TCP (no Nagle delay), and for https completes a TLS handshake with rustls
/// (ALPN `http/1.1`, the server name checked against the certificate).
#[derive(Clone)]
pub(super) struct Connector {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Connector {
    /// Opens a connection (the caller bounds it with the connect timeout).
    pub(super) async fn connect(&self) -> std::io::Result<Stream> {
        let mut last = None;
        for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    return match &self.tls {
                        None => Ok(Box::new(tcp)),
                        Some((tls, name)) => Ok(Box::new(tls.connect(name.clone(), tcp).await?)),
                    };
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the upstream host has no address",
            )
        }))
    }
}

/// The connector every sender dials with (http, or https with rustls and ring).
pub(super) fn build_connector(cfg: &ForwardConfig) -> Connector {
    let (host, port) = cfg.upstream.host_port();
    let tls = (cfg.upstream.scheme == http::uri::Scheme::HTTPS).then(|| {
        let mut roots = rustls::RootCertStore::empty();
        if cfg.ca_certs.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            let (added, ignored) = roots.add_parsable_certificates(cfg.ca_certs.iter().cloned());
            if ignored > 0 {
                tracing::warn!(added, ignored, "some CA certificates could not be used");
            }
        }
        // The crypto provider is named, not left to rustls' process default: in the workspace
        // build the AWS SDK also enables rustls' aws-lc-rs, and with two providers compiled in
        // rustls panics instead of choosing one.
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(host.clone())
            .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("valid DNS name"));
        (tokio_rustls::TlsConnector::from(Arc::new(config)), name)
    });
    Connector { host, port, tls }
}
