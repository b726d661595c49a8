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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Serve,
    Validate,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bootstrap = match load_bootstrap(&args.config)? {
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
    if args.mode == Mode::Validate {
        println!("{} is valid", args.config.display());
        return Ok(ExitCode::SUCCESS);
    }

    let proxy = legate_proxy::Proxy::start(bootstrap).await?;
    if let Some(address) = proxy.admin_address() {
        println!("admin listening on {address}");
    }
    for (name, address) in proxy.listeners() {
        println!("listener {name} listening on {address}");
    }

    super::shutdown_signal().await;
    info!("shutting down, draining listeners");
    proxy.shutdown().await;
    Ok(ExitCode::SUCCESS)
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
