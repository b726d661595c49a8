//! `legate-bench`: measures Legate against nginx, HAProxy and a direct
//! connection on this machine, and writes a results page with plots.

mod ads_client;
mod bench;
mod control_plane;
mod grpc_client;
mod grpc_upstream;
mod grpc_wire;
mod http_client;
mod load;
mod machine;
mod peers;
mod process;
mod report;
mod scenarios;
mod stats;
mod tools;
mod upstream;
mod websocket_client;
mod websocket_upstream;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "legate-bench", about = "Benchmark Legate against nginx, HAProxy and a direct connection on loopback")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

// The variant names give the hidden subcommands' names (`echo-upstream` and so on).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the echo upstream that every target forwards to (started by the
    /// harness itself).
    #[command(hide = true)]
    EchoUpstream(upstream::EchoArgs),
    /// Run the gRPC upstream of scenarios 4 to 6 (started by the harness itself).
    #[command(hide = true)]
    GrpcUpstream(grpc_upstream::GrpcArgs),
    /// Run the WebSocket echo upstream of scenario 7 (started by the harness itself).
    #[command(hide = true)]
    WebsocketUpstream(websocket_upstream::WebSocketArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Run every scenario for a few seconds, to check that the harness works;
    /// the numbers are not meant to be compared.
    #[arg(long)]
    quick: bool,
    /// Folder for RESULTS.md, the plots and the logs of every process.
    #[arg(long, default_value = "target/bench-results")]
    out: PathBuf,
    /// Runs per measurement; the page reports their median, min and max.
    /// Defaults to 5, or 2 with --quick.
    #[arg(long)]
    runs: Option<usize>,
    /// Use this legate binary instead of building one with
    /// `cargo build --release`.
    #[arg(long)]
    legate_bin: Option<PathBuf>,
    /// Scenario numbers to run, comma-separated (default: all that exist).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<u8>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::EchoUpstream(args)) => upstream::serve(args),
        Some(Command::GrpcUpstream(args)) => grpc_upstream::serve(args),
        Some(Command::WebsocketUpstream(args)) => websocket_upstream::serve(args),
        None => {
            // Scenario 7 holds 10,000 proxied WebSockets: two sockets each in
            // the proxy, one each in the harness and the upstream. The proxies
            // and upstreams inherit the limit through taskset.
            process::raise_open_files_limit(process::OPEN_FILES_LIMIT);
            bench::run(cli.run)
        }
    }
}
