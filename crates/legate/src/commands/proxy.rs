//! `legate proxy`: runs the data plane from an Envoy-format bootstrap.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tracing::{info, warn};

use legate_api::envoy::config::bootstrap::v3::Bootstrap;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Envoy-format bootstrap file (YAML or JSON).
    #[arg(short, long)]
    pub config: PathBuf,
    /// Worker threads; defaults to one per core.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// `serve` runs the proxy; `validate` checks the bootstrap and exits,
    /// with status 0 when it is valid.
    #[arg(long, value_enum, default_value_t = Mode::Serve)]
    pub mode: Mode,
    /// Longest wait, in seconds, for connections to finish after SIGTERM or
    /// `/quitquitquit`; defaults to the listeners' longest `drain_timeout`.
    #[arg(long, value_name = "SECONDS")]
    pub drain_time_s: Option<u64>,
    /// Node id sent to the control plane, in place of the bootstrap's
    /// `node.id` (Envoy's flag of the same name). An empty value keeps the
    /// bootstrap's.
    #[arg(long, value_name = "ID")]
    pub service_node: Option<String>,
    /// Node cluster sent to the control plane, in place of the bootstrap's
    /// `node.cluster` (Envoy's flag of the same name). An empty value keeps
    /// the bootstrap's.
    #[arg(long, value_name = "NAME")]
    pub service_cluster: Option<String>,
    /// File holding the bearer token to send on the ADS stream, when the
    /// control plane requires one (`legate control-plane --ads-token-file`).
    /// It is read again at every reconnect.
    #[arg(long, value_name = "FILE", env = "LEGATE_ADS_TOKEN_FILE")]
    pub ads_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Serve,
    Validate,
}

pub async fn run(args: Args, log_filter: super::LogFilter) -> anyhow::Result<ExitCode> {
    let mut bootstrap = match load_bootstrap(&args.config)? {
        Ok(bootstrap) => bootstrap,
        Err(errors) => {
            eprintln!("invalid bootstrap {}:", args.config.display());
            for error in errors.iter() {
                eprintln!("  {error}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    for field in &bootstrap.ignored_fields {
        warn!(field, "config field accepted but ignored");
    }
    override_node(&mut bootstrap.node, &args);
    if let Some(path) = &args.ads_token_file {
        let Some(ads) = &mut bootstrap.ads else {
            anyhow::bail!("--ads-token-file needs a bootstrap with dynamic_resources.ads_config");
        };
        ads.token_file = Some(path.clone());
    }
    if args.mode == Mode::Serve && bootstrap.node.id.is_empty() {
        warn!("node id is empty; set node.id in the bootstrap or pass --service-node");
    }
    if args.mode == Mode::Validate {
        println!("{} is valid", args.config.display());
        return Ok(ExitCode::SUCCESS);
    }

    let proxy = legate_proxy::Proxy::start(bootstrap, Some(std::sync::Arc::new(log_filter))).await?;
    if let Some(address) = proxy.admin_address() {
        println!("admin listening on {address}");
    }
    for (name, address) in proxy.listeners() {
        println!("listener {name} listening on {address}");
    }

    tokio::select! {
        _ = super::shutdown_signal() => info!("shutdown signal received, draining listeners"),
        _ = proxy.shutdown_requested() => info!("admin asked to quit, draining listeners"),
    }
    let drain_time = args.drain_time_s.map(std::time::Duration::from_secs);
    tokio::select! {
        _ = proxy.shutdown(drain_time) => {}
        _ = super::shutdown_signal() => warn!("second shutdown signal, closing what is left now"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Applies `--service-node` and `--service-cluster`. Kubernetes expands a
/// missing label in `$(VAR)` arguments to an empty string, so empty values
/// are ignored.
fn override_node(node: &mut legate_config::model::Node, args: &Args) {
    if let Some(id) = args.service_node.as_deref().filter(|id| !id.is_empty()) {
        node.id = id.to_string();
    }
    if let Some(cluster) = args.service_cluster.as_deref().filter(|cluster| !cluster.is_empty()) {
        node.cluster = cluster.to_string();
    }
    info!(node.id = %node.id, node.cluster = %node.cluster, "proxy node identity");
}

fn load_bootstrap(
    path: &PathBuf,
) -> anyhow::Result<Result<legate_config::model::Bootstrap, legate_config::ConfigErrors>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    let proto = match legate_config::text::parse::<Bootstrap>(&text, "envoy.config.bootstrap.v3.Bootstrap") {
        Ok(proto) => proto,
        Err(errors) => return Ok(Err(errors)),
    };
    Ok(legate_config::decode::bootstrap(&proto))
}
