//! Decoding of TLS transport sockets: `DownstreamTlsContext` on filter
//! chains and `UpstreamTlsContext` on clusters.

use std::path::PathBuf;
use std::sync::Arc;

use legate_api::envoy::config::core::v3 as core;
use legate_api::envoy::extensions::transport_sockets::tls::v3 as tls;

use super::{decode_message, enum_value};
use crate::error::Collector;
use crate::model::{
    CertificateValidation, DataSource, DownstreamTls, SanType, Secret, SecretKind, SubjectAltNameMatcher, TlsCertificate, TlsVersion,
    TlsVersions, UpstreamTls,
};
use crate::reflect::type_url_of;

const DOWNSTREAM_TYPE: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM_TYPE: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

/// Decodes a filter chain's transport socket, which must be TLS.
pub(crate) fn downstream(socket: &core::TransportSocket, errors: &mut Collector) -> Option<Arc<DownstreamTls>> {
    let bytes = typed_config(socket, DOWNSTREAM_TYPE, errors)?;
    let proto = errors.at("typed_config", |errors| decode_message::<tls::DownstreamTlsContext>(bytes, errors))?;
    errors.at("typed_config", |errors| downstream_context(&proto, errors)).map(Arc::new)
}

/// Decodes a cluster's transport socket, which must be TLS.
pub(crate) fn upstream(socket: &core::TransportSocket, errors: &mut Collector) -> Option<Arc<UpstreamTls>> {
    let bytes = typed_config(socket, UPSTREAM_TYPE, errors)?;
    let proto = errors.at("typed_config", |errors| decode_message::<tls::UpstreamTlsContext>(bytes, errors))?;
    errors.at("typed_config", |errors| upstream_context(&proto, errors)).map(Arc::new)
}

fn typed_config<'a>(socket: &'a core::TransportSocket, expected: &str, errors: &mut Collector) -> Option<&'a [u8]> {
    let Some(core::transport_socket::ConfigType::TypedConfig(config)) = &socket.config_type else {
        errors.missing("typed_config");
        return None;
    };
    if config.type_url != type_url_of(expected) {
        errors.at("typed_config", |errors| {
            errors.unsupported(format!("transport socket {} is not supported here; Legate supports {expected}", config.type_url))
        });
        return None;
    }
    Some(&config.value)
}

fn downstream_context(proto: &tls::DownstreamTlsContext, errors: &mut Collector) -> Option<DownstreamTls> {
    let Some(common) = &proto.common_tls_context else {
        errors.missing("common_tls_context");
        return None;
    };
    let common = errors.at("common_tls_context", |errors| common_context(common, errors))?;
    let require_client_certificate = proto.require_client_certificate.unwrap_or(false);
    if common.certificates.is_empty() && common.certificate_secrets.is_empty() {
        errors.at("common_tls_context", |errors| errors.missing("tls_certificates or tls_certificate_sds_secret_configs"));
        return None;
    }
    if require_client_certificate && common.validation.is_none() && common.validation_secret.is_none() {
        errors.at("require_client_certificate", |errors| {
            errors.invalid(
                "require_client_certificate needs common_tls_context.validation_context.trusted_ca or \
                 common_tls_context.validation_context_sds_secret_config",
            )
        });
        return None;
    }
    Some(DownstreamTls {
        certificates: common.certificates,
        certificate_secrets: common.certificate_secrets,
        versions: common.versions,
        alpn_protocols: common.alpn_protocols,
        require_client_certificate,
        validation: common.validation,
        validation_secret: common.validation_secret,
    })
}

fn upstream_context(proto: &tls::UpstreamTlsContext, errors: &mut Collector) -> Option<UpstreamTls> {
    let common = match &proto.common_tls_context {
        Some(common) => errors.at("common_tls_context", |errors| common_context(common, errors))?,
        None => Common {
            certificates: Vec::new(),
            certificate_secrets: Vec::new(),
            versions: TlsVersions::default(),
            alpn_protocols: Vec::new(),
            validation: None,
            validation_secret: None,
        },
    };
    if common.certificates.len() + common.certificate_secrets.len() > 1 {
        errors.at("common_tls_context", |errors| {
            errors.invalid(
                "an upstream TLS context takes at most one client certificate, from tls_certificates or \
                 tls_certificate_sds_secret_configs",
            )
        });
        return None;
    }
    if proto.sni.len() > 255 {
        errors.at("sni", |errors| errors.invalid("sni is longer than 255 bytes"));
        return None;
    }
    Some(UpstreamTls {
        sni: proto.sni.clone(),
        certificate: common.certificates.into_iter().next(),
        certificate_secret: common.certificate_secrets.into_iter().next(),
        versions: common.versions,
        alpn_protocols: common.alpn_protocols,
        validation: common.validation,
        validation_secret: common.validation_secret,
    })
}

/// The parts of `CommonTlsContext` both directions share.
struct Common {
    certificates: Vec<TlsCertificate>,
    certificate_secrets: Vec<String>,
    versions: TlsVersions,
    alpn_protocols: Vec<String>,
    validation: Option<CertificateValidation>,
    validation_secret: Option<String>,
}

fn common_context(proto: &tls::CommonTlsContext, errors: &mut Collector) -> Option<Common> {
    let versions = match &proto.tls_params {
        Some(params) => errors.at("tls_params", |errors| versions(params, errors))?,
        None => TlsVersions::default(),
    };
    let certificates: Vec<_> = proto
        .tls_certificates
        .iter()
        .enumerate()
        .map(|(index, certificate)| errors.at(format!("tls_certificates[{index}]"), |errors| tls_certificate(certificate, errors)))
        .collect();
    let certificate_secrets: Vec<_> = proto
        .tls_certificate_sds_secret_configs
        .iter()
        .enumerate()
        .map(|(index, config)| errors.at(format!("tls_certificate_sds_secret_configs[{index}]"), |errors| sds_secret_config(config, errors)))
        .collect();
    if !proto.tls_certificates.is_empty() && !proto.tls_certificate_sds_secret_configs.is_empty() {
        errors.invalid("tls_certificates and tls_certificate_sds_secret_configs cannot both be set; use one of them");
    }
    let (validation, validation_secret) = match &proto.validation_context_type {
        Some(tls::common_tls_context::ValidationContextType::ValidationContext(context)) => {
            (Some(errors.at("validation_context", |errors| validation_context(context, errors))?), None)
        }
        Some(tls::common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(config)) => {
            (None, Some(errors.at("validation_context_sds_secret_config", |errors| sds_secret_config(config, errors))?))
        }
        None => (None, None),
    };
    for (index, protocol) in proto.alpn_protocols.iter().enumerate() {
        if protocol.is_empty() || protocol.len() > 255 {
            errors.at(format!("alpn_protocols[{index}]"), |errors| errors.invalid("an ALPN protocol must be 1 to 255 bytes"));
        }
    }
    Some(Common {
        certificates: certificates.into_iter().collect::<Option<_>>()?,
        certificate_secrets: certificate_secrets.into_iter().collect::<Option<_>>()?,
        versions,
        alpn_protocols: proto.alpn_protocols.clone(),
        validation,
        validation_secret,
    })
}

/// Decodes a reference to an SDS secret, which must come over ADS.
fn sds_secret_config(proto: &tls::SdsSecretConfig, errors: &mut Collector) -> Option<String> {
    super::listener::ads_source(proto.sds_config.as_ref(), "sds_config", errors);
    if proto.name.is_empty() {
        errors.missing("name");
        return None;
    }
    Some(proto.name.clone())
}

/// Decodes an SDS `Secret` resource.
pub fn secret(proto: &tls::Secret, errors: &mut Collector) -> Option<Secret> {
    use tls::secret::Type;

    super::required_name(&proto.name, "name", errors);
    let kind = match &proto.r#type {
        Some(Type::TlsCertificate(certificate)) => {
            errors.at("tls_certificate", |errors| tls_certificate(certificate, errors)).map(SecretKind::TlsCertificate)
        }
        Some(Type::ValidationContext(context)) => {
            errors.at("validation_context", |errors| validation_context(context, errors)).map(SecretKind::ValidationContext)
        }
        Some(Type::GenericSecret(generic)) => {
            errors.at("generic_secret.secret", |errors| data_source(generic.secret.as_ref(), errors)).map(SecretKind::GenericSecret)
        }
        None => {
            errors.missing("tls_certificate, validation_context or generic_secret");
            None
        }
    };
    if proto.name.is_empty() {
        return None;
    }
    Some(Secret { name: proto.name.clone(), kind: kind? })
}

fn versions(proto: &tls::TlsParameters, errors: &mut Collector) -> Option<TlsVersions> {
    let defaults = TlsVersions::default();
    let minimum = errors.at("tls_minimum_protocol_version", |errors| version(proto.tls_minimum_protocol_version, defaults.minimum, errors));
    let maximum = errors.at("tls_maximum_protocol_version", |errors| version(proto.tls_maximum_protocol_version, defaults.maximum, errors));
    let versions = TlsVersions { minimum: minimum?, maximum: maximum? };
    if versions.minimum > versions.maximum {
        errors.invalid("tls_minimum_protocol_version is above tls_maximum_protocol_version");
        return None;
    }
    Some(versions)
}

fn version(value: i32, default: TlsVersion, errors: &mut Collector) -> Option<TlsVersion> {
    use tls::tls_parameters::TlsProtocol;

    match enum_value::<TlsProtocol>(value, "version", errors)? {
        TlsProtocol::TlsAuto => Some(default),
        TlsProtocol::TlSv12 => Some(TlsVersion::Tls12),
        TlsProtocol::TlSv13 => Some(TlsVersion::Tls13),
        TlsProtocol::TlSv10 | TlsProtocol::TlSv11 => {
            errors.unsupported("TLS 1.0 and 1.1 are not supported; Legate supports TLSv1_2 and TLSv1_3");
            None
        }
    }
}

fn tls_certificate(proto: &tls::TlsCertificate, errors: &mut Collector) -> Option<TlsCertificate> {
    let chain = errors.at("certificate_chain", |errors| data_source(proto.certificate_chain.as_ref(), errors));
    let key = errors.at("private_key", |errors| data_source(proto.private_key.as_ref(), errors));
    Some(TlsCertificate { certificate_chain: chain?, private_key: key? })
}

fn validation_context(proto: &tls::CertificateValidationContext, errors: &mut Collector) -> Option<CertificateValidation> {
    let trusted_ca = errors.at("trusted_ca", |errors| data_source(proto.trusted_ca.as_ref(), errors));
    let matchers: Vec<_> = proto
        .match_typed_subject_alt_names
        .iter()
        .enumerate()
        .map(|(index, matcher)| errors.at(format!("match_typed_subject_alt_names[{index}]"), |errors| san_matcher(matcher, errors)))
        .collect();
    Some(CertificateValidation { trusted_ca: trusted_ca?, subject_alt_names: matchers.into_iter().collect::<Option<_>>()? })
}

fn san_matcher(proto: &tls::SubjectAltNameMatcher, errors: &mut Collector) -> Option<SubjectAltNameMatcher> {
    use tls::subject_alt_name_matcher::SanType as ProtoSanType;

    let san_type = match enum_value::<ProtoSanType>(proto.san_type, "san_type", errors)? {
        ProtoSanType::Unspecified => {
            errors.missing("san_type");
            None
        }
        ProtoSanType::Email => Some(SanType::Email),
        ProtoSanType::Dns => Some(SanType::Dns),
        ProtoSanType::Uri => Some(SanType::Uri),
        ProtoSanType::IpAddress => Some(SanType::IpAddress),
    };
    let matcher = match &proto.matcher {
        Some(matcher) => errors.at("matcher", |errors| super::route::string_matcher(matcher, errors)),
        None => {
            errors.missing("matcher");
            None
        }
    };
    Some(SubjectAltNameMatcher { san_type: san_type?, matcher: matcher? })
}

/// Decodes a `DataSource` holding PEM data: a file name or inline bytes.
pub(crate) fn data_source(proto: Option<&core::DataSource>, errors: &mut Collector) -> Option<DataSource> {
    match proto.and_then(|source| source.specifier.as_ref()) {
        Some(core::data_source::Specifier::Filename(path)) if path.is_empty() => {
            errors.missing("filename");
            None
        }
        Some(core::data_source::Specifier::Filename(path)) => Some(DataSource::Filename(PathBuf::from(path))),
        Some(core::data_source::Specifier::InlineBytes(bytes)) => Some(DataSource::Inline(Arc::from(bytes.as_slice()))),
        Some(core::data_source::Specifier::InlineString(text)) => Some(DataSource::Inline(Arc::from(text.as_bytes()))),
        None => {
            errors.missing("filename, inline_bytes or inline_string");
            None
        }
    }
}
