//! Decoding SDS `Secret` resources and the `SdsSecretConfig` references of
//! TLS contexts, and checking those references across a config.

use legate_config::error::ErrorKind;
use legate_config::model::{DataSource, SecretKind};
use legate_config::resource::decode_any;
use legate_config::text::parse_resources;
use legate_config::{validate, Resource};

const HCM: &str = r#"{ name: hcm, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: { name: r }, http_filters: [{ name: envoy.filters.http.router }] } }"#;

const SECRET_TYPE: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

fn secret_yaml(body: &str) -> String {
    format!("resources:\n- {{ \"@type\": {SECRET_TYPE}, {body} }}\n")
}

/// Renders a listener whose `common_tls_context` has `fields`, in YAML flow style.
fn listener_yaml(fields: &str) -> String {
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: l
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 8443 }} }}
  filter_chains:
  - {{ transport_socket: {{ name: envoy.transport_sockets.tls, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, common_tls_context: {{ {fields} }} }} }}, filters: [{HCM}] }}
"#
    )
}

fn decode_all(yaml: &str) -> Result<Vec<Resource>, String> {
    let resources = parse_resources(yaml).map_err(|errors| errors.to_string())?;
    resources.iter().map(|any| decode_any(any).map(|decoded| decoded.value).map_err(|errors| errors.to_string())).collect()
}

fn decode_one(yaml: &str) -> Result<Resource, String> {
    decode_all(yaml).map(|mut resources| resources.remove(0))
}

#[test]
fn secret_kinds_decode() {
    let certificate = decode_one(&secret_yaml(r#"name: cert, tls_certificate: { certificate_chain: { filename: /c.crt }, private_key: { inline_string: "KEY" } }"#)).unwrap();
    let Resource::Secret(secret) = certificate else { panic!("not a secret") };
    assert_eq!(secret.name, "cert");
    let SecretKind::TlsCertificate(certificate) = &secret.kind else { panic!("not a tls_certificate") };
    assert_eq!(certificate.certificate_chain, DataSource::Filename("/c.crt".into()));
    assert_eq!(certificate.private_key, DataSource::Inline(b"KEY".as_slice().into()));

    let validation = decode_one(&secret_yaml(r#"name: ca, validation_context: { trusted_ca: { filename: /ca.crt } }"#)).unwrap();
    let Resource::Secret(secret) = validation else { panic!("not a secret") };
    assert!(matches!(secret.kind, SecretKind::ValidationContext(_)));

    let generic = decode_one(&secret_yaml(r#"name: token, generic_secret: { secret: { inline_string: "s3cr3t" } }"#)).unwrap();
    let Resource::Secret(secret) = generic else { panic!("not a secret") };
    assert_eq!(secret.kind, SecretKind::GenericSecret(DataSource::Inline(b"s3cr3t".as_slice().into())));
}

#[test]
fn inline_secret_bytes_not_in_debug_output() {
    let Resource::Secret(secret) = decode_one(&secret_yaml(r#"name: token, generic_secret: { secret: { inline_string: "s3cr3t" } }"#)).unwrap() else {
        panic!("not a secret")
    };
    let printed = format!("{secret:?}");
    assert!(!printed.contains("s3cr3t"), "got {printed}");
    assert!(printed.contains("redacted"), "got {printed}");
}

#[test]
fn secret_without_kind_is_rejected() {
    let error = decode_one(&secret_yaml("name: empty")).unwrap_err();
    assert!(error.contains("tls_certificate, validation_context or generic_secret"), "got {error}");
}

#[test]
fn unimplemented_secret_field_is_rejected() {
    let error = decode_one(&secret_yaml("name: keys, session_ticket_keys: { keys: [] }")).unwrap_err();
    assert!(error.contains("session_ticket_keys"), "got {error}");
}

#[test]
fn listener_sds_references_decode() {
    let fields = "tls_certificate_sds_secret_configs: [{ name: cert, sds_config: { ads: {} } }], \
                  validation_context_sds_secret_config: { name: ca, sds_config: { ads: {} } }";
    let Resource::Listener(listener) = decode_one(&listener_yaml(fields)).unwrap() else { panic!("not a listener") };
    let tls = listener.filter_chains[0].tls.as_ref().unwrap();
    assert!(tls.certificates.is_empty());
    assert_eq!(tls.certificate_secrets, vec!["cert".to_string()]);
    assert_eq!(tls.validation_secret.as_deref(), Some("ca"));
    assert_eq!(listener.secret_names().collect::<Vec<_>>(), vec!["cert", "ca"]);
}

#[test]
fn sds_config_must_be_ads() {
    let error = decode_one(&listener_yaml("tls_certificate_sds_secret_configs: [{ name: cert }]")).unwrap_err();
    assert!(error.contains("sds_config"), "got {error}");

    let error = decode_one(&listener_yaml("tls_certificate_sds_secret_configs: [{ sds_config: { ads: {} } }]")).unwrap_err();
    assert!(error.contains("name"), "got {error}");
}

#[test]
fn missing_secret_is_unknown_reference() {
    let yaml = listener_yaml("tls_certificate_sds_secret_configs: [{ name: cert, sds_config: { ads: {} } }]");
    let resources = decode_all(&yaml).unwrap();
    let errors = validate::snapshot(&resources);
    assert_eq!(errors.0.len(), 1, "got {errors}");
    assert_eq!(errors.0[0].kind, ErrorKind::UnknownReference);
    assert!(errors.0[0].message.contains("\"cert\""), "got {errors}");
}

#[test]
fn secret_of_wrong_kind_is_invalid() {
    let listener = listener_yaml("tls_certificate_sds_secret_configs: [{ name: cert, sds_config: { ads: {} } }]");
    let secret = secret_yaml(r#"name: cert, validation_context: { trusted_ca: { filename: /ca.crt } }"#);
    let mut resources = decode_all(&listener).unwrap();
    resources.extend(decode_all(&secret).unwrap());
    let errors = validate::snapshot(&resources);
    assert_eq!(errors.0.len(), 1, "got {errors}");
    assert_eq!(errors.0[0].kind, ErrorKind::Invalid);
    assert!(errors.0[0].message.contains("tls_certificate"), "got {errors}");
}

#[test]
fn present_secret_resolves() {
    let listener = listener_yaml("tls_certificate_sds_secret_configs: [{ name: cert, sds_config: { ads: {} } }]");
    let secret = secret_yaml(r#"name: cert, tls_certificate: { certificate_chain: { filename: /c.crt }, private_key: { filename: /c.key } }"#);
    let mut resources = decode_all(&listener).unwrap();
    resources.extend(decode_all(&secret).unwrap());
    let errors = validate::snapshot(&resources);
    assert!(errors.0.is_empty(), "got {errors}");
}

#[test]
fn upstream_takes_one_certificate_secret() {
    let cluster = r#"resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: c
  connect_timeout: 1s
  load_assignment: { cluster_name: c }
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
      common_tls_context:
        tls_certificate_sds_secret_configs: [{ name: client, sds_config: { ads: {} } }]
        validation_context_sds_secret_config: { name: ca, sds_config: { ads: {} } }
"#;
    let Resource::Cluster(decoded) = decode_one(cluster).unwrap() else { panic!("not a cluster") };
    let tls = decoded.tls.as_ref().unwrap();
    assert_eq!(tls.certificate_secret.as_deref(), Some("client"));
    assert_eq!(tls.validation_secret.as_deref(), Some("ca"));

    let two = cluster.replace("[{ name: client, sds_config: { ads: {} } }]", "[{ name: a, sds_config: { ads: {} } }, { name: b, sds_config: { ads: {} } }]");
    let error = decode_one(&two).unwrap_err();
    assert!(error.contains("at most one client certificate"), "got {error}");
}

#[test]
fn bootstrap_without_ads_rejects_secret_names() {
    let bootstrap = r#"
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 8443 } }
    filter_chains:
    - transport_socket: { name: envoy.transport_sockets.tls, typed_config: { "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, common_tls_context: { tls_certificate_sds_secret_configs: [{ name: cert, sds_config: { ads: {} } }] } } }
      filters: [{ name: hcm, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: { name: r }, http_filters: [{ name: envoy.filters.http.router }] } }]
"#;
    let proto = legate_config::text::parse::<legate_api::envoy::config::bootstrap::v3::Bootstrap>(bootstrap, "envoy.config.bootstrap.v3.Bootstrap").unwrap();
    let error = legate_config::decode::bootstrap(&proto).unwrap_err().to_string();
    assert!(error.contains("\"cert\""), "got {error}");
    assert!(error.contains("ads_config"), "got {error}");
}

#[test]
fn inline_and_sds_certificates_are_exclusive() {
    let fields = "tls_certificates: [{ certificate_chain: { filename: /c.crt }, private_key: { filename: /c.key } }], \
                  tls_certificate_sds_secret_configs: [{ name: cert, sds_config: { ads: {} } }]";
    let error = decode_one(&listener_yaml(fields)).unwrap_err();
    assert!(error.contains("cannot both be set"), "got {error}");
}
