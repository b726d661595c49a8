//! `legate control-plane`: serves the config API and ADS on one gRPC port,
//! keeps the config in a data directory or shares it with other replicas
//! through etcd, and optionally serves the sidecar injection webhook over
//! HTTPS and an admin port with metrics.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use legate_control_plane::admin;
use legate_control_plane::webhook::{self, SidecarTemplate};
use legate_control_plane::{ControlPlane, EtcdSettings};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tokio::sync::watch;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the gRPC port serving the config API and ADS; port 0 picks
    /// a free port.
    #[arg(long, value_name = "ADDR", default_value = super::DEFAULT_SERVER)]
    pub listen: SocketAddr,

    /// Directory of the state file (config.pb), created if missing.
    /// Unused with --etcd-endpoints.
    #[arg(long, value_name = "DIR", default_value = "./legate-data")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub replication: ReplicationArgs,

    /// File holding a bearer token the config API then requires (`legate
    /// apply --token-file` sends it). Without it the API is open to anyone
    /// who reaches the port.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,

    /// File holding a bearer token every ADS stream then requires (`legate
    /// proxy --ads-token-file` sends it).
    #[arg(long, value_name = "FILE")]
    pub ads_token_file: Option<PathBuf>,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Address of a plain HTTP port serving GET /metrics (Prometheus) and
    /// GET /ready; without it no admin port runs.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// A config shared through etcd by several control-plane replicas.
#[derive(Debug, clap::Args)]
pub struct ReplicationArgs {
    /// Comma-separated client URLs of etcd (http://HOST:PORT). The config
    /// and its history then live in etcd, shared by every replica given the
    /// same endpoints and prefix, instead of in --data-dir.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,

    /// Prefix of the etcd keys this control plane reads and writes.
    #[arg(long, value_name = "PREFIX", default_value = legate_control_plane::etcd::DEFAULT_PREFIX)]
    pub etcd_prefix: String,

    /// Name of this replica, shown by `legate proxies` beside each proxy it
    /// serves. Defaults to $HOSTNAME (the pod name on Kubernetes), else the
    /// listen address.
    #[arg(long, value_name = "NAME")]
    pub replica_id: Option<String>,
}

impl ReplicationArgs {
    fn replica_id(&self, listen: SocketAddr) -> String {
        let from_environment = std::env::var("HOSTNAME").ok().filter(|name| !name.is_empty());
        self.replica_id.clone().or(from_environment).unwrap_or_else(|| listen.to_string())
    }
}

/// TLS and client certificates on the gRPC port.
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain of the gRPC port, leaf first; the port then
    /// speaks TLS only.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the gRPC port's certificate.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM certificates of the CA that signs client certificates; every
    /// client of the gRPC port must then present one (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
}

impl TlsArgs {
    fn server_config(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let identity = Identity::from_pem(read_pem(cert, "certificate")?, read_pem(key, "private key")?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_pem(ca, "client CA")?));
        }
        Ok(Some(config))
    }
}

fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("failed to read the {what} {}", path.display()))
}

/// Reads a bearer token file, which must not be empty.
fn read_token(path: &Path, what: &str) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path).with_context(|| format!("failed to read the {what} {}", path.display()))?;
    let token = token.trim();
    anyhow::ensure!(!token.is_empty(), "the {what} file {} is empty", path.display());
    Ok(token.to_string())
}

#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Address of the HTTPS port serving the sidecar injection webhook
    /// (POST /inject); without it no webhook runs.
    #[arg(long, value_name = "ADDR", requires_all = ["webhook_cert", "webhook_key"])]
    pub webhook_listen: Option<SocketAddr>,

    /// PEM certificate chain of the webhook, leaf first.
    #[arg(long, value_name = "FILE")]
    pub webhook_cert: Option<PathBuf>,

    /// PEM private key of the webhook certificate.
    #[arg(long, value_name = "FILE")]
    pub webhook_key: Option<PathBuf>,

    /// Container image of the injected proxy sidecar.
    #[arg(long, value_name = "IMAGE", default_value = "legate:0.1.0")]
    pub sidecar_image: String,

    /// ConfigMap, in each injected pod's namespace, holding the sidecar's
    /// bootstrap.yaml; a pod's sidecar.legate.io/bootstrap annotation overrides it.
    #[arg(long, value_name = "NAME", default_value = "legate-sidecar-bootstrap")]
    pub sidecar_bootstrap: String,

    /// Pod label whose value becomes the sidecar's node cluster.
    #[arg(long, value_name = "LABEL", default_value = "app")]
    pub sidecar_cluster_label: String,

    /// Secret, in each injected pod's namespace, whose `token` key the
    /// sidecar sends as its ADS bearer token (`--ads-token-file`).
    #[arg(long, value_name = "NAME")]
    pub sidecar_ads_token_secret: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut plane = open(&args).await?;
    if let Some(path) = &args.api_token_file {
        plane = plane.with_api_token(&read_token(path, "API token")?);
    }
    if let Some(path) = &args.ads_token_file {
        plane = plane.with_ads_token(&read_token(path, "ADS token")?);
    }
    if let Some(tls) = args.tls.server_config()? {
        plane = plane.with_tls(tls);
    }
    let listener =
        TcpListener::bind(args.listen).await.with_context(|| format!("failed to listen on {}", args.listen))?;
    let address = listener.local_addr().context("failed to read the bound address")?;
    let replica_id = args.replication.replica_id(address);
    plane = plane.with_replica_id(&replica_id);
    let webhook = start_webhook(&args.webhook).await?;
    let admin = match args.admin_listen {
        Some(listen) => Some(TcpListener::bind(listen).await.with_context(|| format!("failed to listen on {listen}"))?),
        None => None,
    };

    announce(&format!("control plane listening on {address}"))?;
    tracing::info!(listen.addr = %address, replica = %replica_id, "control plane started");
    if let Some((listener, _, template)) = &webhook {
        let address = listener.local_addr().context("failed to read the bound webhook address")?;
        announce(&format!("webhook listening on {address}"))?;
        tracing::info!(listen.addr = %address, sidecar.image = %template.image, "sidecar injection webhook started");
    }

    if let Some(listener) = &admin {
        let address = listener.local_addr().context("failed to read the bound admin address")?;
        announce(&format!("admin listening on {address}"))?;
        tracing::info!(listen.addr = %address, "control plane admin port started");
    }

    let (stop, stopped) = watch::channel(false);
    let admin_task = admin.map(|listener| {
        tokio::spawn(admin::serve(listener, plane.proxies().clone(), wait_for_stop(stopped.clone())))
    });
    let webhook_task = webhook.map(|(listener, tls, template)| {
        tokio::spawn(webhook::serve(listener, tls, template, wait_for_stop(stopped.clone())))
    });
    let signal = async move {
        super::shutdown_signal().await;
        let _ = stop.send(true);
    };
    plane.serve(listener, signal).await?;
    if let Some(task) = webhook_task {
        task.await.context("webhook task failed")?;
    }
    if let Some(task) = admin_task {
        task.await.context("admin task failed")?;
    }
    tracing::info!("control plane stopped");
    Ok(ExitCode::SUCCESS)
}

/// Opens the config in etcd with --etcd-endpoints, else in the data directory.
async fn open(args: &Args) -> anyhow::Result<ControlPlane> {
    let replication = &args.replication;
    if replication.etcd_endpoints.is_empty() {
        return Ok(ControlPlane::open(&args.data_dir)?);
    }
    let settings = EtcdSettings { endpoints: replication.etcd_endpoints.clone(), prefix: replication.etcd_prefix.clone() };
    ControlPlane::open_etcd(&settings)
        .await
        .with_context(|| format!("failed to open the config in etcd at {}", settings.endpoints.join(",")))
}

type Webhook = (TcpListener, Arc<webhook::tls::ServerConfig>, SidecarTemplate);

/// Binds the webhook port and loads its certificate, when `--webhook-listen` is given.
async fn start_webhook(args: &WebhookArgs) -> anyhow::Result<Option<Webhook>> {
    let Some(listen) = args.webhook_listen else {
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (&args.webhook_cert, &args.webhook_key) else {
        anyhow::bail!("--webhook-listen needs --webhook-cert and --webhook-key");
    };
    let tls = webhook::server_config(cert, key)?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("failed to listen on {listen}"))?;
    let template = SidecarTemplate {
        image: args.sidecar_image.clone(),
        bootstrap_config_map: args.sidecar_bootstrap.clone(),
        cluster_label: args.sidecar_cluster_label.clone(),
        ads_token_secret: args.sidecar_ads_token_secret.clone(),
    };
    Ok(Some((listener, tls, template)))
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

/// Prints a stdout line that scripts and tests wait for; with port 0 it is
/// the only way to learn the port.
fn announce(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush().context("failed to write to stdout")
}
