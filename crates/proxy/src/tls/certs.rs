//! Certificates and keys from PEM data sources, and the resolver that
//! serves them, re-reading their files when they change on disk.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

use legate_config::model::{DataSource, DataSourceError, TlsCertificate};

/// How often certificate files are checked for changes.
const ROTATION_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A certificate, key or CA bundle that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsLoadError {
    #[error(transparent)]
    Read(#[from] DataSourceError),
    #[error("invalid PEM in {source_name}")]
    Pem { source_name: String, #[source] source: rustls_pki_types::pem::Error },
    #[error("no certificate in {source_name}")]
    NoCertificate { source_name: String },
    #[error("unusable private key in {source_name}")]
    Key { source_name: String, #[source] source: rustls::Error },
    #[error("the private key in {key} does not match the certificate in {certificate}")]
    KeyMismatch { certificate: String, key: String },
    #[error("invalid trusted CA in {source_name}")]
    TrustedCa { source_name: String, #[source] source: rustls::Error },
    #[error("failed to build the TLS config")]
    Config(#[source] rustls::Error),
}

/// Names a data source in messages without printing inline key material.
pub(crate) fn source_name(source: &DataSource) -> String {
    match source {
        DataSource::Filename(path) => path.display().to_string(),
        DataSource::Inline(_) => "inline data".to_string(),
    }
}

pub(crate) fn read_chain(source: &DataSource) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let bytes = source.read()?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsLoadError::Pem { source_name: source_name(source), source: error })?;
    if chain.is_empty() {
        return Err(TlsLoadError::NoCertificate { source_name: source_name(source) });
    }
    Ok(chain)
}

/// Loads a certificate chain and its private key, checking that they match.
pub(crate) fn certified_key(certificate: &TlsCertificate) -> Result<Arc<CertifiedKey>, TlsLoadError> {
    let chain = read_chain(&certificate.certificate_chain)?;
    let key_bytes = certificate.private_key.read()?;
    let key_name = || source_name(&certificate.private_key);
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|source| TlsLoadError::Pem { source_name: key_name(), source })?;
    let signing_key =
        super::provider().key_provider.load_private_key(key).map_err(|source| TlsLoadError::Key { source_name: key_name(), source })?;
    let certified = CertifiedKey::new(chain, signing_key);
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) = certified.keys_match() {
        return Err(TlsLoadError::KeyMismatch { certificate: source_name(&certificate.certificate_chain), key: key_name() });
    }
    Ok(Arc::new(certified))
}

/// Reads CA certificates into a root store.
pub(crate) fn root_store(source: &DataSource) -> Result<Arc<rustls::RootCertStore>, TlsLoadError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_chain(source)? {
        roots.add(certificate).map_err(|error| TlsLoadError::TrustedCa { source_name: source_name(source), source: error })?;
    }
    Ok(Arc::new(roots))
}

/// The certificates of one filter chain. Serves the first whose key can
/// sign with a scheme the client offers, and the first one otherwise.
#[derive(Debug)]
pub(crate) struct CertificateSet {
    certificates: Vec<TlsCertificate>,
    loaded: ArcSwap<Vec<Arc<CertifiedKey>>>,
}

impl CertificateSet {
    /// Loads every certificate, and starts watching their files when any
    /// comes from a file. The watch ends when the set is dropped.
    pub(crate) fn load(certificates: &[TlsCertificate]) -> Result<Arc<Self>, TlsLoadError> {
        let loaded = certificates.iter().map(certified_key).collect::<Result<Vec<_>, _>>()?;
        let set = Arc::new(CertificateSet { certificates: certificates.to_vec(), loaded: ArcSwap::from_pointee(loaded) });
        let files: Vec<PathBuf> = certificates
            .iter()
            .flat_map(|certificate| [&certificate.certificate_chain, &certificate.private_key])
            .filter_map(|source| source.filename().map(PathBuf::from))
            .collect();
        if !files.is_empty() {
            tokio::spawn(watch_files(Arc::downgrade(&set), files));
        }
        Ok(set)
    }

    /// Returns the certificates served now, first one first.
    pub(crate) fn current(&self) -> Arc<Vec<Arc<CertifiedKey>>> {
        self.loaded.load_full()
    }

    fn reload(&self) -> Result<(), TlsLoadError> {
        let loaded = self.certificates.iter().map(certified_key).collect::<Result<Vec<_>, _>>()?;
        self.loaded.store(Arc::new(loaded));
        Ok(())
    }
}

impl ResolvesServerCert for CertificateSet {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.loaded.load();
        let schemes = hello.signature_schemes();
        loaded.iter().find(|key| key.key.choose_scheme(schemes).is_some()).or_else(|| loaded.first()).cloned()
    }
}

/// Polls the files' modification times and reloads the set when one
/// changes. A file that fails to load keeps the previous certificates, and
/// is tried again on its next change.
async fn watch_files(set: Weak<CertificateSet>, files: Vec<PathBuf>) {
    let stamps = |files: &[PathBuf]| -> Vec<Option<(SystemTime, u64)>> {
        files.iter().map(|file| std::fs::metadata(file).ok().and_then(|meta| Some((meta.modified().ok()?, meta.len())))).collect()
    };
    let mut last = stamps(&files);
    let mut interval = tokio::time::interval(ROTATION_POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(set) = set.upgrade() else { return };
        let now = stamps(&files);
        if now == last {
            continue;
        }
        last = now;
        match set.reload() {
            Ok(()) => info!(files = ?files, "TLS certificates reloaded from disk"),
            Err(error) => warn!(files = ?files, error = %error_chain(&error), "failed to reload TLS certificates; keeping the previous ones"),
        }
    }
}

/// Formats an error with its causes, for logs.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
