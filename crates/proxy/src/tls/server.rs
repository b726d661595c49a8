//! Downstream TLS: one rustls `ServerConfig` per filter chain, built at
//! config load, and the handshake that reads the ClientHello, picks the
//! filter chain by SNI, then completes with that chain's config.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;
use rustls::server::WebPkiClientVerifier;

use legate_config::model::{ClientCertDetails, Codec, DownstreamTls, FilterChain, Listener};

use super::certs::{root_store, CertificateSet, TlsLoadError};
use super::verify::ClientVerifier;

/// A TLS handshake that failed; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake timed out after {0:?}")]
    TimedOut(Duration),
    #[error("TLS handshake failed")]
    Io(#[source] std::io::Error),
    #[error("no filter chain matches server name {0:?}, and none is the default")]
    NoFilterChain(String),
    #[error("the client sent no server name, and no filter chain is the default")]
    NoDefaultChain,
}

/// The TLS side of one listener: each filter chain's server config and the
/// SNI lookup that picks a chain.
pub struct ServerChains {
    /// Server config and certificates per filter chain, in config order.
    chains: Vec<ChainTls>,
    exact: HashMap<String, usize>,
    /// `*.suffix` names as (`.suffix`, chain), longest suffix first, so the
    /// most specific wildcard wins.
    wildcards: Vec<(String, usize)>,
    default: Option<usize>,
    /// The longest `transport_socket_connect_timeout` of the chains, because
    /// the chain is not known until the ClientHello arrives; `None` when
    /// one of them disables the timeout.
    handshake_timeout: Option<Duration>,
}

struct ChainTls {
    config: Arc<rustls::ServerConfig>,
    certificates: Arc<CertificateSet>,
    /// `set_current_client_cert_details` of the chain's connection manager.
    details: ClientCertDetails,
}

/// A completed downstream handshake.
pub struct TlsConnection {
    pub stream: TlsStream<TcpStream>,
    /// Index of the filter chain that serves the connection.
    pub chain: usize,
    /// The negotiated ALPN protocol decides the codec when present.
    pub codec: Option<Codec>,
    /// The `x-forwarded-client-cert` element of an mTLS connection.
    pub client_cert: Option<HeaderValue>,
}

impl ServerChains {
    /// Builds the server configs of a listener whose filter chains all
    /// terminate TLS; returns `None` for a plaintext listener.
    pub fn new(listener: &Listener) -> Result<Option<Arc<Self>>, TlsLoadError> {
        if !listener.has_tls() {
            return Ok(None);
        }
        let mut chains = Vec::new();
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        let mut default = None;
        // Decoding allows a plaintext chain only as a listener's single chain,
        // so here every chain has TLS and `chains` lines up with `filter_chains`.
        for (index, chain) in listener.filter_chains.iter().enumerate() {
            let Some(tls) = &chain.tls else { continue };
            chains.push(chain_tls(chain, tls)?);
            if chain.server_names.is_empty() {
                default = Some(index);
            }
            for name in &chain.server_names {
                match name.strip_prefix('*') {
                    Some(suffix) => wildcards.push((suffix.to_string(), index)),
                    None => {
                        exact.insert(name.clone(), index);
                    }
                }
            }
        }
        wildcards.sort_by_key(|(suffix, _): &(String, usize)| std::cmp::Reverse(suffix.len()));
        let timeouts = listener.filter_chains.iter().map(|chain| chain.handshake_timeout);
        let handshake_timeout = if timeouts.clone().any(|timeout| timeout.is_zero()) { None } else { timeouts.max() };
        Ok(Some(Arc::new(ServerChains { chains, exact, wildcards, default, handshake_timeout })))
    }

    /// Picks the filter chain for a server name: an exact name, then the
    /// longest matching wildcard, then the chain without server names.
    fn select(&self, server_name: Option<&str>) -> Option<usize> {
        let Some(name) = server_name else { return self.default };
        let name = name.to_ascii_lowercase();
        if let Some(index) = self.exact.get(&name) {
            return Some(*index);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map(|(_, index)| *index)
            .or(self.default)
    }

    /// Runs the handshake, bounded by the handshake timeout.
    pub async fn accept(&self, stream: TcpStream) -> Result<TlsConnection, HandshakeError> {
        let Some(limit) = self.handshake_timeout else { return self.handshake(stream).await };
        match tokio::time::timeout(limit, self.handshake(stream)).await {
            Ok(result) => result,
            Err(_) => Err(HandshakeError::TimedOut(limit)),
        }
    }

    async fn handshake(&self, stream: TcpStream) -> Result<TlsConnection, HandshakeError> {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await.map_err(HandshakeError::Io)?;
        let server_name = start.client_hello().server_name().map(str::to_owned);
        let Some(index) = self.select(server_name.as_deref()) else {
            return Err(server_name.map_or(HandshakeError::NoDefaultChain, HandshakeError::NoFilterChain));
        };
        let chain_tls = &self.chains[index];
        let stream = start.into_stream(chain_tls.config.clone()).await.map_err(HandshakeError::Io)?;

        let (_, connection) = stream.get_ref();
        let codec = match connection.alpn_protocol() {
            Some(b"h2") => Some(Codec::Http2),
            Some(b"http/1.1") => Some(Codec::Http1),
            _ => None,
        };
        let client_cert = connection.peer_certificates().and_then(|peer| {
            // NOTE: with several certificates this names the first, which
            // may not be the one the resolver picked for this client.
            let served = chain_tls.certificates.current();
            let served_leaf = served.first().and_then(|key| key.cert.first());
            super::xfcc::element(served_leaf, peer, chain_tls.details)
        });
        Ok(TlsConnection { stream, chain: index, codec, client_cert })
    }
}

fn chain_tls(chain: &FilterChain, tls: &DownstreamTls) -> Result<ChainTls, TlsLoadError> {
    let provider = super::provider();
    let versions = super::protocol_versions(tls.versions);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(TlsLoadError::Config)?;
    let builder = match &tls.validation {
        Some(validation) => {
            let roots = root_store(&validation.trusted_ca)?;
            let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let webpki = if tls.require_client_certificate { webpki } else { webpki.allow_unauthenticated() };
            let inner = webpki.build().map_err(|error| TlsLoadError::Config(rustls::Error::General(error.to_string())))?;
            let verifier = ClientVerifier { inner, matchers: validation.subject_alt_names.clone() };
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
        None => builder.with_no_client_auth(),
    };
    let certificates = CertificateSet::load(&tls.certificates)?;
    let mut config = builder.with_cert_resolver(certificates.clone());
    config.alpn_protocols = if tls.alpn_protocols.is_empty() {
        match chain.http.codec {
            Codec::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Codec::Http1 => vec![b"http/1.1".to_vec()],
            Codec::Http2 => vec![b"h2".to_vec()],
        }
    } else {
        tls.alpn_protocols.iter().map(|protocol| protocol.as_bytes().to_vec()).collect()
    };
    Ok(ChainTls { config: Arc::new(config), certificates, details: chain.http.set_current_client_cert })
}
