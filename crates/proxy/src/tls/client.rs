//! Upstream TLS: the client config of a cluster with an
//! `UpstreamTlsContext`, built when the cluster is loaded, and the
//! connection type the pool uses for plaintext and TLS alike.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use legate_config::model::{SubjectAltNameMatcher, UpstreamProtocol, UpstreamTls};

use super::certs::{certified_key, root_store, TlsLoadError};
use super::verify::subject_alt_names_match;

/// Opens TLS connections to a cluster's endpoints.
pub struct UpstreamConnector {
    /// Offers `h2` in ALPN, for HTTP/2 connections.
    http2: tokio_rustls::TlsConnector,
    /// Offers `http/1.1`, for HTTP/1.1 connections, which WebSocket upgrades
    /// need even on an HTTP/2 cluster.
    http1: tokio_rustls::TlsConnector,
    /// `sni`; without it the endpoint's IP address names the server, and
    /// rustls sends no SNI.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConnector").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// Connectors are equal only to themselves, so a pool is reused across
/// cluster updates only while its connector stays.
impl PartialEq for UpstreamConnector {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl UpstreamConnector {
    /// Builds the client configs: versions, client certificate, server
    /// certificate checks and ALPN, which offers the HTTP version of each
    /// connection unless `alpn_protocols` is set.
    pub fn new(tls: &UpstreamTls) -> Result<Arc<Self>, TlsLoadError> {
        let provider = super::provider();
        let versions = super::protocol_versions(tls.versions);
        let verifier: Arc<dyn ServerCertVerifier> = match &tls.validation {
            Some(validation) => {
                let roots = root_store(&validation.trusted_ca)?;
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|error| TlsLoadError::Config(rustls::Error::General(error.to_string())))?;
                Arc::new(ServerVerifier { inner: Some(inner), matchers: validation.subject_alt_names.clone(), provider: provider.clone() })
            }
            None => Arc::new(ServerVerifier { inner: None, matchers: Vec::new(), provider: provider.clone() }),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(TlsLoadError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &tls.certificate {
            Some(certificate) => {
                let key = certified_key(certificate)?;
                builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)))
            }
            None => builder.with_no_client_auth(),
        };
        let connector = |default: &[u8]| {
            let mut config = config.clone();
            config.alpn_protocols = if tls.alpn_protocols.is_empty() {
                vec![default.to_vec()]
            } else {
                tls.alpn_protocols.iter().map(|protocol| protocol.as_bytes().to_vec()).collect()
            };
            tokio_rustls::TlsConnector::from(Arc::new(config))
        };
        let server_name = match tls.sni.as_str() {
            "" => None,
            sni => Some(
                ServerName::try_from(sni.to_string())
                    .map_err(|error| TlsLoadError::Config(rustls::Error::General(format!("invalid sni {sni:?}: {error}"))))?,
            ),
        };
        Ok(Arc::new(UpstreamConnector { http2: connector(b"h2"), http1: connector(b"http/1.1"), server_name }))
    }

    /// Runs the TLS handshake over a connected socket for a connection that
    /// will speak `protocol`.
    pub async fn connect(&self, address: SocketAddr, stream: TcpStream, protocol: UpstreamProtocol) -> io::Result<TlsStream<TcpStream>> {
        let name = self.server_name.clone().unwrap_or_else(|| ServerName::IpAddress(address.ip().into()));
        let connector = match protocol {
            UpstreamProtocol::Http2 => &self.http2,
            UpstreamProtocol::Http1 => &self.http1,
        };
        connector.connect(name, stream).await
    }
}

/// Checks a server certificate as Envoy does: against `trusted_ca` and the
/// SAN matchers when a validation context is set, and not at all without
/// one. The server name (`sni`) is not checked against the certificate;
/// `match_typed_subject_alt_names` does that job.
#[derive(Debug)]
struct ServerVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    matchers: Vec<SubjectAltNameMatcher>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else { return Ok(ServerCertVerified::assertion()) };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the name only after the chain, so the chain is valid here.
            Ok(_) | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {}
            Err(error) => return Err(error),
        }
        if !subject_alt_names_match(end_entity, &self.matchers) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// An upstream connection, plaintext or TLS.
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_write(cx, data),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, buffers: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, buffers),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, buffers),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(stream) => stream.is_write_vectored(),
            UpstreamIo::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_flush(cx),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            UpstreamIo::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
