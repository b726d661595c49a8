//! The config API client that `apply`, `get` and `proxies` share: the
//! control plane's address and the bearer token it may require.

use std::path::PathBuf;

use anyhow::Context;
use legate_api::legate::config::v1::config_service_client::ConfigServiceClient;
use tonic::codegen::InterceptedService;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// Command-line flags that locate the config API.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Control plane address, as host:port.
    #[arg(long, value_name = "ADDR", default_value = super::DEFAULT_SERVER)]
    pub server: String,

    /// File holding the config API's bearer token, when the control plane
    /// requires one (`legate control-plane --api-token-file`).
    #[arg(long, value_name = "FILE", env = "LEGATE_API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM certificates of the CA that signed the control plane's
    /// certificate; the connection then uses TLS (`legate control-plane
    /// --tls-cert`).
    #[arg(long, value_name = "FILE", env = "LEGATE_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (`legate control-plane
    /// --client-ca`).
    #[arg(long, value_name = "FILE", env = "LEGATE_CERT_FILE", requires_all = ["key_file", "ca_file"])]
    pub cert_file: Option<PathBuf>,

    /// PEM private key of the client certificate.
    #[arg(long, value_name = "FILE", env = "LEGATE_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,

    /// Name the control plane's certificate must carry; defaults to the
    /// host of `--server`.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

/// A config API client that sends the bearer token, if any, on every call.
pub type ApiClient = ConfigServiceClient<InterceptedService<Channel, BearerToken>>;

impl ServerArgs {
    /// Connects to the config API at `--server`, reading the token file first.
    pub async fn connect(&self) -> anyhow::Result<ApiClient> {
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("failed to read the API token {}", path.display()))?;
                let value = format!("Bearer {}", text.trim());
                Some(value.parse().with_context(|| format!("the API token in {} is not valid header text", path.display()))?)
            }
            None => None,
        };

        let server = &self.server;
        let mut endpoint = tonic::transport::Endpoint::from_shared(super::server_uri(server, self.ca_file.is_some()))?;
        if let Some(tls) = self.tls_config()? {
            endpoint = endpoint.tls_config(tls).context("invalid TLS settings")?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| match &self.ca_file {
                Some(_) => format!(
                    "failed to connect to the control plane at {server} over TLS; check that it runs with --tls-cert, that --ca-file signed its certificate, and that --cert-file and --key-file are given when it requires client certificates"
                ),
                None => format!("failed to reach the control plane at {server}; is `legate control-plane` running there (and without --tls-cert)?"),
            })?;
        Ok(ConfigServiceClient::with_interceptor(channel, BearerToken(token)))
    }
}

impl ServerArgs {
    fn tls_config(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let Some(ca_file) = &self.ca_file else {
            return Ok(None);
        };
        let ca = std::fs::read(ca_file).with_context(|| format!("failed to read the CA file {}", ca_file.display()))?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some(name) = &self.tls_server_name {
            config = config.domain_name(name.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            let cert = std::fs::read(cert).with_context(|| format!("failed to read the client certificate {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("failed to read the client key {}", key.display()))?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        Ok(Some(config))
    }
}

/// Names the person making a change, for the history: `LEGATE_USER`, else
/// `USER@hostname`.
pub fn operator() -> String {
    if let Ok(name) = std::env::var("LEGATE_USER") {
        return name;
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_string());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|name| name.trim().to_string()).unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// An interceptor that adds `authorization: Bearer <token>` to each call.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}
