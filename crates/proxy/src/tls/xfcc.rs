//! `x-forwarded-client-cert`: the client certificate details of an mTLS
//! connection, formatted once per connection as Envoy formats them, and
//! applied to each request by the `forward_client_cert_details` mode.

use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

use legate_config::model::{ClientCertDetails, ForwardClientCert};

static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Characters left as they are when a PEM block is URL-encoded.
const PEM_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Formats one XFCC element: `By` (each URI SAN of the certificate Legate
/// served), `Hash` (hex SHA-256 of the client's DER certificate), then
/// `Cert`, `Chain`, `Subject`, `URI` and `DNS` (one entry per SAN) as
/// `details` selects.
pub(crate) fn element(served: Option<&CertificateDer<'_>>, peer: &[CertificateDer<'_>], details: ClientCertDetails) -> Option<HeaderValue> {
    let leaf = peer.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let mut parts: Vec<String> = Vec::new();

    if let Some((_, served)) = served.and_then(|served| x509_parser::parse_x509_certificate(served).ok()) {
        parts.extend(uris(&served).into_iter().map(|uri| format!("By={uri}")));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf);
    parts.push(format!("Hash={}", hex(digest.as_ref())));
    if details.cert {
        parts.push(format!("Cert=\"{}\"", url_encoded_pem(std::slice::from_ref(leaf))));
    }
    if details.chain {
        parts.push(format!("Chain=\"{}\"", url_encoded_pem(peer)));
    }
    if details.subject {
        parts.push(format!("Subject=\"{}\"", rfc2253(parsed.subject()).replace('"', "\\\"")));
    }
    if details.uri {
        // As in Envoy, the URI key is present even when the certificate has no URI SAN.
        let uris = uris(&parsed);
        if uris.is_empty() {
            parts.push("URI=".to_string());
        }
        parts.extend(uris.into_iter().map(|uri| format!("URI={uri}")));
    }
    if details.dns {
        parts.extend(dns_names(&parsed).into_iter().map(|name| format!("DNS={name}")));
    }
    HeaderValue::from_str(&parts.join(";")).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn url_encoded_pem(certificates: &[CertificateDer<'_>]) -> String {
    use base64::Engine;

    let mut pem = String::new();
    for certificate in certificates {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = base64::engine::general_purpose::STANDARD.encode(certificate.as_ref());
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    utf8_percent_encode(&pem, PEM_ENCODE).to_string()
}

fn general_names<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a GeneralName<'a>> {
    match cert.subject_alternative_name() {
        Ok(Some(names)) => names.value.general_names.iter().collect(),
        _ => Vec::new(),
    }
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    general_names(cert)
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    general_names(cert)
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect()
}

/// Formats a distinguished name as RFC 2253 does: the last RDN first,
/// attributes as `CN=value`, separated by commas.
fn rfc2253(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<String> = Vec::new();
    for rdn in name.iter_rdn() {
        let attributes: Vec<String> = rdn
            .iter()
            .map(|attribute| {
                let oid = attribute.attr_type().to_id_string();
                let key = match oid.as_str() {
                    "2.5.4.3" => "CN".to_string(),
                    "2.5.4.6" => "C".to_string(),
                    "2.5.4.7" => "L".to_string(),
                    "2.5.4.8" => "ST".to_string(),
                    "2.5.4.10" => "O".to_string(),
                    "2.5.4.11" => "OU".to_string(),
                    "2.5.4.9" => "STREET".to_string(),
                    "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                    "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                    _ => oid,
                };
                format!("{key}={}", escape_rfc2253(attribute.as_str().unwrap_or_default()))
            })
            .collect();
        rdns.push(attributes.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

fn escape_rfc2253(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for (index, character) in value.chars().enumerate() {
        let leading = index == 0 && (character == ' ' || character == '#');
        let trailing = index + 1 == value.chars().count() && character == ' ';
        if leading || trailing || matches!(character, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Applies the connection manager's mode to a request's
/// `x-forwarded-client-cert`. `element` is the connection's own element,
/// present on mTLS connections only.
pub fn apply_forward_client_cert(headers: &mut HeaderMap, mode: ForwardClientCert, element: Option<&HeaderValue>) {
    match (mode, element) {
        (ForwardClientCert::AlwaysForwardOnly, _) | (ForwardClientCert::ForwardOnly, Some(_)) => {}
        (ForwardClientCert::SanitizeSet, Some(element)) => {
            headers.insert(X_FORWARDED_CLIENT_CERT.clone(), element.clone());
        }
        (ForwardClientCert::AppendForward, Some(element)) => {
            let value = match headers.get(&X_FORWARDED_CLIENT_CERT) {
                Some(existing) if !existing.is_empty() => {
                    let mut joined = Vec::with_capacity(existing.len() + 1 + element.len());
                    joined.extend_from_slice(existing.as_bytes());
                    joined.push(b',');
                    joined.extend_from_slice(element.as_bytes());
                    HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).unwrap_or_else(|_| element.clone())
                }
                _ => element.clone(),
            };
            headers.insert(X_FORWARDED_CLIENT_CERT.clone(), value);
        }
        (ForwardClientCert::Sanitize, _) | (_, None) => {
            headers.remove(&X_FORWARDED_CLIENT_CERT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_set_replaces_client_header() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-client-cert", HeaderValue::from_static("Hash=forged"));
        let element = HeaderValue::from_static("Hash=abc");
        apply_forward_client_cert(&mut headers, ForwardClientCert::SanitizeSet, Some(&element));
        assert_eq!(headers["x-forwarded-client-cert"], "Hash=abc");
    }

    #[test]
    fn append_forward_joins_elements() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-client-cert", HeaderValue::from_static("Hash=first"));
        let element = HeaderValue::from_static("Hash=second");
        apply_forward_client_cert(&mut headers, ForwardClientCert::AppendForward, Some(&element));
        assert_eq!(headers["x-forwarded-client-cert"], "Hash=first,Hash=second");
    }

    #[test]
    fn forward_modes_drop_header_without_mtls() {
        for mode in [ForwardClientCert::Sanitize, ForwardClientCert::ForwardOnly, ForwardClientCert::AppendForward, ForwardClientCert::SanitizeSet] {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-client-cert", HeaderValue::from_static("Hash=forged"));
            apply_forward_client_cert(&mut headers, mode, None);
            assert!(!headers.contains_key("x-forwarded-client-cert"), "{mode:?} kept the header");
        }
    }

    #[test]
    fn always_forward_only_keeps_header() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-client-cert", HeaderValue::from_static("Hash=client"));
        apply_forward_client_cert(&mut headers, ForwardClientCert::AlwaysForwardOnly, None);
        assert_eq!(headers["x-forwarded-client-cert"], "Hash=client");
    }
}
