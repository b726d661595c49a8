//! Secrets delivered over SDS, and their resolution into the TLS contexts
//! that name them.

use std::collections::HashMap;
use std::sync::Arc;

use super::tls::{CertificateValidation, DataSource, DownstreamTls, TlsCertificate, UpstreamTls};

/// `Secret`: TLS material or an opaque value that listeners, clusters and
/// filters refer to by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Secret {
    pub name: String,
    pub kind: SecretKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SecretKind {
    TlsCertificate(TlsCertificate),
    ValidationContext(CertificateValidation),
    GenericSecret(DataSource),
}

impl SecretKind {
    /// Returns the name of this kind's field in Envoy's `Secret` message.
    pub const fn field_name(&self) -> &'static str {
        match self {
            SecretKind::TlsCertificate(_) => "tls_certificate",
            SecretKind::ValidationContext(_) => "validation_context",
            SecretKind::GenericSecret(_) => "generic_secret",
        }
    }
}

/// A secret that a TLS context names but that cannot fill it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretLookupError {
    #[error("secret {0:?} does not exist")]
    Missing(String),
    #[error("secret {name:?} contains a {found}, but this field needs a {expected}")]
    WrongKind { name: String, expected: &'static str, found: &'static str },
}

/// Secrets by name.
pub type Secrets = HashMap<String, Arc<Secret>>;

fn certificate(secrets: &Secrets, name: &str) -> Result<TlsCertificate, SecretLookupError> {
    match secrets.get(name).map(|secret| &secret.kind) {
        Some(SecretKind::TlsCertificate(certificate)) => Ok(certificate.clone()),
        Some(other) => Err(wrong_kind(name, "tls_certificate", other)),
        None => Err(SecretLookupError::Missing(name.to_string())),
    }
}

fn validation(secrets: &Secrets, name: &str) -> Result<CertificateValidation, SecretLookupError> {
    match secrets.get(name).map(|secret| &secret.kind) {
        Some(SecretKind::ValidationContext(validation)) => Ok(validation.clone()),
        Some(other) => Err(wrong_kind(name, "validation_context", other)),
        None => Err(SecretLookupError::Missing(name.to_string())),
    }
}

fn wrong_kind(name: &str, expected: &'static str, found: &SecretKind) -> SecretLookupError {
    SecretLookupError::WrongKind { name: name.to_string(), expected, found: found.field_name() }
}

impl DownstreamTls {
    /// Names of the SDS secrets this context refers to.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.certificate_secrets.iter().chain(&self.validation_secret).map(String::as_str)
    }

    /// Returns a copy with the named secrets filled in, so that it needs no
    /// secret any more.
    pub fn resolve(&self, secrets: &Secrets) -> Result<DownstreamTls, SecretLookupError> {
        let mut resolved = self.clone();
        for name in resolved.certificate_secrets.drain(..) {
            resolved.certificates.push(certificate(secrets, &name)?);
        }
        if let Some(name) = resolved.validation_secret.take() {
            resolved.validation = Some(validation(secrets, &name)?);
        }
        Ok(resolved)
    }
}

impl UpstreamTls {
    /// Names of the SDS secrets this context refers to.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.certificate_secret.iter().chain(&self.validation_secret).map(String::as_str)
    }

    /// Returns a copy with the named secrets filled in, so that it needs no
    /// secret any more.
    pub fn resolve(&self, secrets: &Secrets) -> Result<UpstreamTls, SecretLookupError> {
        let mut resolved = self.clone();
        if let Some(name) = resolved.certificate_secret.take() {
            resolved.certificate = Some(certificate(secrets, &name)?);
        }
        if let Some(name) = resolved.validation_secret.take() {
            resolved.validation = Some(validation(secrets, &name)?);
        }
        Ok(resolved)
    }
}

impl super::Listener {
    /// Names of the SDS secrets this listener's filter chains refer to.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.filter_chains.iter().filter_map(|chain| chain.tls.as_deref()).flat_map(DownstreamTls::secret_names)
    }
}

impl super::Cluster {
    /// Names of the SDS secrets this cluster's TLS context refers to.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.tls.as_deref().into_iter().flat_map(UpstreamTls::secret_names)
    }
}
