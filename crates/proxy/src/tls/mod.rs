//! TLS: downstream termination with SNI filter chain selection, client
//! certificate checks and `x-forwarded-client-cert`, certificates rotated
//! from disk, and TLS to upstream clusters.

mod certs;
mod client;
mod server;
mod verify;
mod xfcc;

pub(crate) use certs::error_chain;
pub use certs::TlsLoadError;
pub use client::{UpstreamConnector, UpstreamIo};
pub use server::ServerChains;
pub(crate) use xfcc::apply_forward_client_cert;

use std::sync::Arc;

use tokio_rustls::rustls;

/// Loads the certificates, keys and CAs of an SDS secret, so a secret that
/// cannot be used is rejected before any listener or cluster takes it.
/// Returns the error with its causes, for a NACK.
pub(crate) fn check_secret(kind: &legate_config::model::SecretKind) -> Result<(), String> {
    use legate_config::model::SecretKind;

    let result = match kind {
        SecretKind::TlsCertificate(certificate) => certs::certified_key(certificate).map(drop),
        SecretKind::ValidationContext(validation) => certs::root_store(&validation.trusted_ca).map(drop),
        SecretKind::GenericSecret(_) => Ok(()),
    };
    result.map_err(|error| error_chain(&error))
}

/// Returns the crypto provider of every TLS config: ring, because it builds
/// without cmake, unlike aws-lc-rs.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // rustls 0.23.48 deprecates ring's provider only because it has no
    // post-quantum key exchange.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn protocol_versions(versions: legate_config::model::TlsVersions) -> Vec<&'static rustls::SupportedProtocolVersion> {
    use legate_config::model::TlsVersion;

    [(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(version, _)| (versions.minimum..=versions.maximum).contains(version))
        .map(|(_, supported)| supported)
        .collect()
}
