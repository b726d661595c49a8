//! One benchmark run: settings, the Legate build, the processes shared by
//! the HTTP and by the gRPC scenarios, and the loop over scenarios that ends
//! in the report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::machine::{self, Machine};
use crate::peers::{self, Layout, Protocol, RunningProxy, Target};
use crate::report::{self, Page, Section};
use crate::scenarios::grpc::GrpcLab;
use crate::scenarios::{self, http1};
use crate::tools::Tools;
use crate::upstream::EchoUpstream;
use crate::RunArgs;

/// How long and how often each measurement runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub runs: usize,
    pub warm_up: Duration,
    pub saturation_duration: Duration,
    pub fixed_rate_duration: Duration,
    /// Downstream keep-alive connections of the load generators.
    pub connections: usize,
    /// Size of the echo upstream's responses, in bytes.
    pub body_bytes: usize,
    /// Idle keep-alive connections held open to measure memory per connection.
    pub idle_connections: usize,
    /// Extra clusters and routes for the config-size memory figure.
    pub scale: usize,
    /// h2load connections for gRPC unary calls.
    pub grpc_connections: usize,
    /// Unary calls in flight per h2load connection.
    pub grpc_streams: usize,
    /// Size of each gRPC response message, in bytes, before its 5-byte prefix.
    pub grpc_message_bytes: usize,
    /// Messages one server-streaming call returns.
    pub stream_messages: u32,
    /// HTTP/2 connections of the server-streaming client.
    pub stream_connections: usize,
    /// Streaming calls in flight per connection.
    pub stream_streams: usize,
    /// Idle proxied WebSockets held open to measure memory per connection.
    pub websocket_idle: usize,
    /// WebSockets of those that send echo messages.
    pub websocket_active: usize,
    /// Routes and clusters applied at once in scenario 9.
    pub config_change_scale: usize,
    /// Simulated proxies of scenario 10, one run per count.
    pub fan_out_streams: Vec<usize>,
}

impl Settings {
    fn new(args: &RunArgs) -> Settings {
        let quick = args.quick;
        let seconds = |quick_value: u64, full_value: u64| Duration::from_secs(if quick { quick_value } else { full_value });
        Settings {
            quick,
            runs: args.runs.unwrap_or(if quick { 2 } else { 5 }).max(1),
            warm_up: seconds(1, 2),
            saturation_duration: seconds(2, 10),
            fixed_rate_duration: seconds(2, 15),
            connections: 64,
            body_bytes: 1024,
            idle_connections: if quick { 200 } else { 1000 },
            scale: 1000,
            grpc_connections: 16,
            grpc_streams: 8,
            grpc_message_bytes: 1024,
            stream_messages: 100,
            stream_connections: 4,
            stream_streams: 4,
            websocket_idle: 10_000,
            websocket_active: 1_000,
            config_change_scale: 10_000,
            fan_out_streams: vec![1_000, 5_000],
        }
    }
}

/// The echo upstream and every proxy, started once for the HTTP scenarios.
pub struct Http1Lab {
    pub upstream: EchoUpstream,
    pub proxies: Vec<RunningProxy>,
}

impl Http1Lab {
    pub fn port(&self, target: Target) -> u16 {
        self.proxy(target).map_or(self.upstream.port, |proxy| proxy.port)
    }

    pub fn proxy_pid(&self, target: Target) -> Option<u32> {
        self.proxy(target).map(|proxy| proxy.process.pid())
    }

    /// Fails when a proxy exited in the middle of the measurements.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.proxies.iter_mut().try_for_each(|proxy| proxy.process.ensure_running())
    }

    fn proxy(&self, target: Target) -> Option<&RunningProxy> {
        self.proxies.iter().find(|proxy| proxy.target == target)
    }
}

/// Everything the scenarios share.
pub struct Bench {
    pub settings: Settings,
    pub tools: Tools,
    pub legate_bin: PathBuf,
    /// Folder for configs, logs and h2load's per-request files.
    pub work_dir: PathBuf,
    pub lab: Option<Http1Lab>,
    /// Processes of the gRPC scenarios 4 to 6.
    pub grpc: Option<GrpcLab>,
    pub saturation: Option<http1::SaturationResults>,
    pub fixed_rate: Option<http1::FixedRateResults>,
}

impl Bench {
    /// Starts the echo upstream and the three proxies unless they run already.
    pub fn ensure_lab(&mut self) -> anyhow::Result<()> {
        if self.lab.is_some() {
            return Ok(());
        }
        let dir = self.work_dir.join("http1");
        std::fs::create_dir_all(&dir)?;
        let upstream = EchoUpstream::start(self.settings.body_bytes, &dir)?;
        let layout = Layout { protocol: Protocol::Http1, upstream_port: upstream.port, scale: 0 };
        let proxies = Target::PROXIES
            .iter()
            .map(|&target| peers::start(target, layout, &self.tools, &self.legate_bin, &dir))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.lab = Some(Http1Lab { upstream, proxies });
        Ok(())
    }

    /// Saturation runs, measured on first use.
    pub fn saturation(&mut self) -> anyhow::Result<&http1::SaturationResults> {
        if self.saturation.is_none() {
            self.saturation = Some(http1::measure_saturation(self)?);
        }
        Ok(self.saturation.as_ref().expect("set above"))
    }

    /// Fixed-rate runs at half the slowest proxy's saturation rate, measured
    /// on first use.
    pub fn fixed_rate(&mut self) -> anyhow::Result<&http1::FixedRateResults> {
        if self.fixed_rate.is_none() {
            let rate = http1::half_of_slowest_proxy(self.saturation()?)?;
            self.fixed_rate = Some(http1::measure_fixed_rate(self, rate)?);
        }
        Ok(self.fixed_rate.as_ref().expect("set above"))
    }

    /// Starts the gRPC upstream and the proxies in front of it unless they run already.
    pub fn ensure_grpc_lab(&mut self) -> anyhow::Result<()> {
        if self.grpc.is_none() {
            self.grpc = Some(GrpcLab::start(self)?);
        }
        Ok(())
    }

    /// Stops the processes of the HTTP and gRPC scenarios.
    pub fn stop_lab(&mut self) {
        self.lab = None;
        self.grpc = None;
    }
}

/// Runs the scenarios selected by `args` and writes the results page.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = Settings::new(&args);
    let work_dir = args.out.join("work");
    std::fs::create_dir_all(&work_dir).with_context(|| format!("failed to create {}", work_dir.display()))?;
    let work_dir = work_dir.canonicalize()?;

    let tools = Tools::find()?;
    let legate_bin = match &args.legate_bin {
        Some(path) => path.canonicalize().with_context(|| format!("legate binary {} not found", path.display()))?,
        None => build_legate()?,
    };
    let machine = Machine::describe();
    let load_before = machine::load_average();
    eprintln!("load average before the run: {load_before}");
    let foreign_cpu = machine::ForeignCpu::start();

    let mut bench = Bench { settings, tools, legate_bin, work_dir, lab: None, grpc: None, saturation: None, fixed_rate: None };
    let mut sections = Vec::new();
    let mut failed = Vec::new();
    for scenario in scenarios::all() {
        if !args.scenarios.is_empty() && !args.scenarios.contains(&scenario.number()) {
            continue;
        }
        eprintln!("scenario {}: {}", scenario.number(), scenario.title());
        if [scenarios::memory::NUMBER, scenarios::websocket::NUMBER, scenarios::fan_out::NUMBER].contains(&scenario.number()) {
            // These scenarios start their own processes and measure memory.
            bench.stop_lab();
        }
        let section = match scenario.run(&mut bench) {
            Ok(section) => section,
            Err(error) => {
                eprintln!("scenario {} failed: {error:#}", scenario.number());
                failed.push(scenario.number().to_string());
                Section::failed(scenario.as_ref(), &error)
            }
        };
        sections.push(section);
    }
    bench.stop_lab();
    let foreign_cpu_percent = foreign_cpu.share_percent(machine.cores);
    eprintln!("other processes used {foreign_cpu_percent:.1}% of the machine's CPU during the run");

    let page = Page {
        foreign_cpu_percent,
        machine,
        load_before,
        load_after: machine::load_average(),
        tool_versions: bench.tools.versions.clone(),
        legate_version: describe_legate(args.legate_bin.as_deref()),
        settings: bench.settings.clone(),
        sections,
    };
    let written = report::write(&args.out, &page)?;
    eprintln!("results written to {}", written.display());

    // The page is written either way, so that it shows why a scenario
    // failed. The exit status is what scripts and CI check.
    if !failed.is_empty() {
        anyhow::bail!("failed scenarios: {}; see {}", failed.join(", "), written.display());
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `legate` with `cargo build --release` and returns its path.
fn build_legate() -> anyhow::Result<PathBuf> {
    eprintln!("building legate in release mode");
    let root = workspace_root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
        .args(["build", "--release", "-p", "legate", "--bin", "legate"])
        .current_dir(&root)
        .status()
        .context("failed to run cargo build")?;
    if !status.success() {
        anyhow::bail!("cargo build --release -p legate failed with {status}");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let binary = target_dir.join("release/legate");
    binary.canonicalize().with_context(|| format!("built legate not found at {}", binary.display()))
}

/// Describes the Legate under test. A binary passed with `--legate-bin` may
/// have been built from another tree, so the workspace commit is only context.
fn describe_legate(legate_bin: Option<&Path>) -> String {
    match legate_bin {
        None => format!("commit {}, release build", legate_revision()),
        Some(path) => format!("binary {} given with --legate-bin (workspace at commit {})", path.display(), legate_revision()),
    }
}

/// Returns the workspace's git commit, with "+changes" when the tree differs from it.
fn legate_revision() -> String {
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git").args(args).current_dir(workspace_root()).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown commit".to_string());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|changes| !changes.is_empty());
    if dirty {
        format!("{commit}+changes")
    } else {
        commit
    }
}
