//! `legate control-plane`: serves the config API and ADS on one gRPC port and
//! keeps the config in a data directory.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use legate_control_plane::ControlPlane;
use tokio::net::TcpListener;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the gRPC port serving the config API and ADS; port 0 picks
    /// a free port.
    #[arg(long, value_name = "ADDR", default_value = super::DEFAULT_SERVER)]
    pub listen: SocketAddr,

    /// Directory of the state file (config.json), created if missing.
    #[arg(long, value_name = "DIR", default_value = "./legate-data")]
    pub data_dir: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let plane = ControlPlane::open(&args.data_dir)?;
    let listener =
        TcpListener::bind(args.listen).await.with_context(|| format!("failed to listen on {}", args.listen))?;
    let address = listener.local_addr().context("failed to read the bound address")?;

    announce(address)?;
    tracing::info!(listen.addr = %address, data_dir = %args.data_dir.display(), "control plane started");

    plane.serve(listener, super::shutdown_signal()).await?;
    tracing::info!("control plane stopped");
    Ok(ExitCode::SUCCESS)
}

/// Prints the one stdout line that scripts and tests wait for; with port 0
/// it is the only way to learn the port.
fn announce(address: SocketAddr) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "control plane listening on {address}")?;
    stdout.flush().context("failed to write to stdout")
}
