//! Loads the webhook's certificate chain and private key into a rustls server config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

pub use rustls::ServerConfig;

/// The webhook's certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read certificates from {path}")]
    ReadCertificates { path: PathBuf, #[source] source: rustls_pki_types::pem::Error },
    #[error("no PEM certificate found in {path}")]
    NoCertificate { path: PathBuf },
    #[error("failed to read a private key from {path}")]
    ReadKey { path: PathBuf, #[source] source: rustls_pki_types::pem::Error },
    #[error("certificate and key are not usable together")]
    InvalidPair(#[source] rustls::Error),
}

/// Builds a TLS 1.2/1.3 server config, with the ring provider, from a PEM
/// certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = read_chain(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|source| TlsError::ReadKey { path: key_path.to_path_buf(), source })?;

    // rustls 0.23.48 deprecates ring's provider only because it has no
    // post-quantum key exchange; ring is kept because it builds without cmake.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::InvalidPair)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::InvalidPair)?;
    // The API server speaks HTTP/1.1 or HTTP/2 to webhooks; the webhook server is HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |source| TlsError::ReadCertificates { path: path.to_path_buf(), source };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(chain)
}
