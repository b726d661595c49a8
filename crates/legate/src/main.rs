//! The `legate` command: runs the proxy or the control plane, and talks to
//! a running control plane.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "legate", version, about = "A service proxy for HTTP, WebSocket and gRPC, driven by Envoy's xDS API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the data plane from an Envoy-format bootstrap file.
    Proxy(commands::proxy::Args),
    /// Run the control plane: config API and ADS server.
    ControlPlane(commands::control_plane::Args),
    /// Apply Envoy-format resources from a YAML or JSON file.
    Apply(commands::apply::Args),
    /// Print the config in force on the control plane.
    Get(commands::get::Args),
    /// List the proxies connected to the control plane and what each accepted.
    Proxies(commands::proxies::Args),
    /// Show which proxies have applied or rejected a config version.
    Status(commands::rollout::Args),
    /// List the kept config versions and who applied each.
    History(commands::history::HistoryArgs),
    /// Put an earlier config version back in force as a new version.
    Rollback(commands::history::RollbackArgs),
    /// Start a control plane, a proxy and demo upstreams on loopback.
    Demo(commands::demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_filter = commands::init_logging();

    let runtime = match commands::runtime_for(&cli.command_threads()) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    let result = runtime.block_on(async move {
        match cli.command {
            Command::Proxy(args) => commands::proxy::run(args, log_filter).await,
            Command::ControlPlane(args) => commands::control_plane::run(args).await,
            Command::Apply(args) => commands::apply::run(args).await,
            Command::Get(args) => commands::get::run(args).await,
            Command::Proxies(args) => commands::proxies::run(args).await,
            Command::Status(args) => commands::rollout::run(args).await,
            Command::History(args) => commands::history::history(args).await,
            Command::Rollback(args) => commands::history::rollback(args).await,
            Command::Demo(args) => commands::demo::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

impl Cli {
    /// Returns the worker threads for the command's runtime; `None` for one
    /// per core. Only the proxy takes `--concurrency`. The client commands
    /// make one request at a time, so one thread serves them without waking
    /// others.
    fn command_threads(&self) -> Option<usize> {
        match &self.command {
            Command::Proxy(args) => args.concurrency,
            Command::ControlPlane(_) | Command::Demo(_) => None,
            Command::Apply(_) | Command::Get(_) | Command::Proxies(_) | Command::Status(_) | Command::History(_) | Command::Rollback(_) => {
                Some(1)
            }
        }
    }
}
