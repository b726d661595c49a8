//! TLS settings of filter chains (downstream) and clusters (upstream).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::route::HeaderMatch;

/// The source of certificate or key bytes.
#[derive(Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A file, read at config load and again whenever it changes on disk.
    Filename(PathBuf),
    Inline(Arc<[u8]>),
}

/// Prints the length of inline data but never its bytes, which may be a
/// private key or an API key.
impl fmt::Debug for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Filename(path) => f.debug_tuple("Filename").field(path).finish(),
            DataSource::Inline(bytes) => write!(f, "Inline([redacted, {} bytes])", bytes.len()),
        }
    }
}

/// A data source that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("failed to read {path}")]
pub struct DataSourceError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl DataSource {
    /// Returns the bytes of an inline source, or the current content of the file.
    pub fn read(&self) -> Result<Arc<[u8]>, DataSourceError> {
        match self {
            DataSource::Inline(bytes) => Ok(bytes.clone()),
            DataSource::Filename(path) => {
                std::fs::read(path).map(Arc::from).map_err(|source| DataSourceError { path: path.clone(), source })
            }
        }
    }

    pub fn filename(&self) -> Option<&std::path::Path> {
        match self {
            DataSource::Filename(path) => Some(path),
            DataSource::Inline(_) => None,
        }
    }
}

/// A PEM certificate chain (leaf first) and its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCertificate {
    pub certificate_chain: DataSource,
    pub private_key: DataSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// The TLS versions a context accepts, `minimum` to `maximum` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsVersions {
    pub minimum: TlsVersion,
    pub maximum: TlsVersion,
}

impl Default for TlsVersions {
    fn default() -> Self {
        TlsVersions { minimum: TlsVersion::Tls12, maximum: TlsVersion::Tls13 }
    }
}

/// The kind of subject alternative name a matcher applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    Email,
    Dns,
    Uri,
    IpAddress,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubjectAltNameMatcher {
    pub san_type: SanType,
    pub matcher: HeaderMatch,
}

/// The checks a peer certificate must pass.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateValidation {
    /// PEM CA certificates the peer's chain must lead to.
    pub trusted_ca: DataSource,
    /// The peer certificate must have a SAN matching at least one of these;
    /// empty accepts any trusted certificate.
    pub subject_alt_names: Vec<SubjectAltNameMatcher>,
}

/// `DownstreamTlsContext`: TLS that a filter chain terminates.
#[derive(Debug, Clone, PartialEq)]
pub struct DownstreamTls {
    /// One or more certificates; rustls picks one the client's signature
    /// schemes support, and takes the first otherwise. Empty when
    /// `certificate_secrets` names them.
    pub certificates: Vec<TlsCertificate>,
    /// Names of SDS secrets that each hold a `tls_certificate`.
    pub certificate_secrets: Vec<String>,
    pub versions: TlsVersions,
    /// ALPN protocols offered, in preference order; empty offers `h2` and `http/1.1`.
    pub alpn_protocols: Vec<String>,
    pub require_client_certificate: bool,
    pub validation: Option<CertificateValidation>,
    /// Name of an SDS secret holding a `validation_context`, used in place of `validation`.
    pub validation_secret: Option<String>,
}

/// `UpstreamTlsContext`: TLS to a cluster's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// Server name sent in the ClientHello and checked against the server
    /// certificate; empty sends none.
    pub sni: String,
    /// Client certificate for mTLS to the upstream.
    pub certificate: Option<TlsCertificate>,
    /// Name of an SDS secret holding the client certificate, used in place of `certificate`.
    pub certificate_secret: Option<String>,
    pub versions: TlsVersions,
    /// ALPN protocols offered; empty offers the HTTP version of each
    /// connection (`h2` or `http/1.1`).
    pub alpn_protocols: Vec<String>,
    /// Without it (and without `validation_secret`) the server certificate
    /// is not verified, as in Envoy.
    pub validation: Option<CertificateValidation>,
    /// Name of an SDS secret holding a `validation_context`, used in place of `validation`.
    pub validation_secret: Option<String>,
}

/// `forward_client_cert_details`: what happens to `x-forwarded-client-cert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardClientCert {
    /// Drop the client's header.
    #[default]
    Sanitize,
    /// Forward the client's header on mTLS connections only.
    ForwardOnly,
    /// Append this connection's client certificate details on mTLS connections.
    AppendForward,
    /// Replace the header with this connection's client certificate details on mTLS connections.
    SanitizeSet,
    /// Forward the client's header on every connection.
    AlwaysForwardOnly,
}

/// `set_current_client_cert_details`: which fields go into the header
/// besides `By` and `Hash`, which are always there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientCertDetails {
    pub subject: bool,
    pub cert: bool,
    pub chain: bool,
    pub dns: bool,
    pub uri: bool,
}
