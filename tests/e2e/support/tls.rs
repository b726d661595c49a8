//! Certificates made with rcgen at test time, and a TLS client that picks
//! its SNI, ALPN and client certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

/// A test certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and key, in PEM.
#[derive(Clone)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        TestCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn issuer_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issues a certificate with DNS names `dns`, common name `common_name`
    /// and, when given, a URI SAN.
    pub fn issue(&self, common_name: &str, dns: &[&str], uri: Option<&str>) -> TestCert {
        let mut params = CertificateParams::new(dns.iter().map(|name| name.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        if let Some(uri) = uri {
            params.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TestCert { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }
}

impl TestCert {
    /// Writes the certificate and key as `<name>.crt` and `<name>.key` in `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        write_replacing(&cert, &self.cert_pem);
        write_replacing(&key, &self.key_pem);
        (cert, key)
    }
}

/// Writes a file through a temporary name and a rename, as tools that
/// rotate certificates do, so a reader never sees half a file.
pub fn write_replacing(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// How a test client connects: SNI, ALPN offer, trusted CA and client certificate.
pub struct ClientTls {
    pub server_name: String,
    pub alpn: Vec<&'static str>,
    pub ca_pem: String,
    pub client: Option<TestCert>,
}

impl ClientTls {
    pub fn new(server_name: &str, ca: &TestCa) -> ClientTls {
        ClientTls { server_name: server_name.to_string(), alpn: vec!["http/1.1"], ca_pem: ca.pem(), client: None }
    }

    fn config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots);
        let mut config = match &self.client {
            Some(client) => {
                let chain = vec![client.der.clone()];
                let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.iter().map(|protocol| protocol.as_bytes().to_vec()).collect();
        Arc::new(config)
    }

    /// Connects and completes the handshake.
    pub async fn connect(&self, address: SocketAddr) -> Result<TlsStream<TcpStream>, String> {
        let connector = tokio_rustls::TlsConnector::from(self.config());
        let stream = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(self.server_name.clone()).map_err(|e| e.to_string())?;
        let stream = connector.connect(name, stream).await.map_err(|e| e.to_string())?;
        // A TLS 1.3 server checks the client certificate after the client
        // considers the handshake done, so a rejection arrives on first read.
        Ok(stream)
    }

    /// Sends one GET over a new connection with whatever protocol ALPN
    /// picked; returns the negotiated protocol, status, body and headers.
    pub async fn get(&self, address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<TlsResponse, String> {
        let stream = self.connect(address).await?;
        let alpn = stream.get_ref().1.alpn_protocol().map(|protocol| String::from_utf8_lossy(protocol).into_owned());
        let mut connection = TlsHttpConnection::handshake(stream, alpn.as_deref() == Some("h2")).await?;
        let (status, body, headers) = connection.get(&self.server_name, path, headers).await?;
        Ok(TlsResponse { alpn, status, body, headers })
    }
}

pub struct TlsResponse {
    pub alpn: Option<String>,
    pub status: u16,
    pub body: String,
    pub headers: hyper::HeaderMap,
}

/// An HTTP/1.1 or HTTP/2 client connection over TLS, kept for many requests.
pub enum TlsHttpConnection {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl TlsHttpConnection {
    pub async fn handshake(stream: TlsStream<TcpStream>, http2: bool) -> Result<TlsHttpConnection, String> {
        let io = TokioIo::new(stream);
        if http2 {
            let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Ok(TlsHttpConnection::Http2(sender))
        } else {
            let (sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            Ok(TlsHttpConnection::Http1(sender))
        }
    }

    pub async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Result<(u16, String, hyper::HeaderMap), String> {
        let mut request = match self {
            TlsHttpConnection::Http1(_) => hyper::Request::get(path).header("host", host),
            TlsHttpConnection::Http2(_) => hyper::Request::get(format!("https://{host}{path}")),
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::new())).unwrap();
        let response = match self {
            TlsHttpConnection::Http1(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await.map_err(|e| e.to_string())?
            }
            TlsHttpConnection::Http2(sender) => {
                sender.ready().await.map_err(|e| e.to_string())?;
                sender.send_request(request).await.map_err(|e| e.to_string())?
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned(), headers))
    }
}

/// Hex SHA-256 of a DER certificate, as `x-forwarded-client-cert` carries it.
pub fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der).as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Builds a TLS server config serving `cert`, offering `alpn`, and requiring a
/// client certificate from `client_ca` when given.
pub fn server_config(cert: &TestCert, client_ca: Option<&TestCa>, alpn: &[&str]) -> Arc<rustls::ServerConfig> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.issuer_der()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let mut config = builder.with_single_cert(vec![cert.der.clone()], key).unwrap();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.as_bytes().to_vec()).collect();
    Arc::new(config)
}
