//! The config API client that `apply`, `get` and `proxies` share: the
//! control plane's address and the bearer token it may require.

use std::path::PathBuf;

use anyhow::Context;
use legate_api::legate::config::v1::config_service_client::ConfigServiceClient;
use tonic::codegen::InterceptedService;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

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
        let channel = tonic::transport::Endpoint::from_shared(super::server_uri(server))?
            .connect()
            .await
            .with_context(|| format!("failed to reach the control plane at {server}; is `legate control-plane` running there?"))?;
        Ok(ConfigServiceClient::with_interceptor(channel, BearerToken(token)))
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
