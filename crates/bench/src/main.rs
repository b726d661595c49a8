//! `legate-bench`: measures Legate against nginx, HAProxy and a direct
//! connection on this machine, and writes a results page with plots.

mod bench;
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the echo upstream that every target forwards to (started by the
    /// harness itself).
    #[command(hide = true)]
    EchoUpstream(upstream::EchoArgs),
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
        None => bench::run(cli.run),
    }
}
