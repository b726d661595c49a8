//! gRPC processes and measurements shared by scenarios 4 to 6: the gRPC
//! upstream, each proxy over h2c, a second Legate with the grpc_web filter,
//! and h2load saturation runs that record the proxy's CPU time.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::bench::{Bench, Settings};
use crate::grpc_client::Form;
use crate::grpc_wire;
use crate::load::{self, GrpcCall, H2Shape, Saturation};
use crate::peers::{self, Layout, Protocol, RunningProxy, Target};
use crate::process;
use crate::tools::Tools;
use crate::upstream::UpstreamProcess;

/// Size of each unary request message, in bytes; responses carry
/// `Settings::grpc_message_bytes`.
pub const REQUEST_MESSAGE_BYTES: usize = 64;

/// The gRPC upstream and every proxy in front of it, started once.
pub struct GrpcLab {
    pub upstream: UpstreamProcess,
    pub proxies: Vec<RunningProxy>,
    /// Legate with the grpc_web filter before the router (scenario 6).
    pub web: RunningProxy,
    /// Folder for configs, logs and request bodies.
    pub dir: PathBuf,
}

impl GrpcLab {
    pub fn start(bench: &Bench) -> anyhow::Result<GrpcLab> {
        let settings = &bench.settings;
        let dir = bench.work_dir.join("grpc");
        std::fs::create_dir_all(&dir)?;
        let args = [format!("--message-bytes={}", settings.grpc_message_bytes), format!("--stream-messages={}", settings.stream_messages)];
        let upstream = UpstreamProcess::start("grpc-upstream", &args, &dir)?;
        let layout = Layout { protocol: Protocol::Grpc, upstream_port: upstream.port, scale: 0 };
        let proxies = Target::PROXIES
            .iter()
            .map(|&target| peers::start(target, layout, &bench.tools, &bench.legate_bin, &dir))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let web_layout = Layout { protocol: Protocol::GrpcWeb, ..layout };
        let web = peers::start(Target::Legate, web_layout, &bench.tools, &bench.legate_bin, &dir)?;
        for form in Form::ALL {
            std::fs::write(request_file(&dir, form), form.body(REQUEST_MESSAGE_BYTES))?;
        }
        Ok(GrpcLab { upstream, proxies, web, dir })
    }

    pub fn port(&self, target: Target) -> u16 {
        self.proxy(target).map_or(self.upstream.port, |proxy| proxy.port)
    }

    pub fn proxy_pid(&self, target: Target) -> Option<u32> {
        self.proxy(target).map(|proxy| proxy.process.pid())
    }

    /// Fails when a proxy exited in the middle of the measurements.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.proxies.iter_mut().chain([&mut self.web]).try_for_each(|proxy| proxy.process.ensure_running())
    }

    fn proxy(&self, target: Target) -> Option<&RunningProxy> {
        self.proxies.iter().find(|proxy| proxy.target == target)
    }
}

/// File with the pre-encoded request body of `form`, written by `GrpcLab::start`.
pub fn request_file(dir: &Path, form: Form) -> PathBuf {
    let name = match form {
        Form::Grpc => "request-grpc.bin",
        Form::GrpcWeb => "request-grpc-web.bin",
        Form::GrpcWebText => "request-grpc-web-text.txt",
    };
    dir.join(name)
}

/// Returns the body file and headers of `form`'s unary call for h2load.
pub fn unary_call(dir: &Path, form: Form) -> (PathBuf, Vec<String>) {
    let mut headers = vec![format!("content-type: {}", form.content_type())];
    headers.extend(form.extra_headers().iter().map(|header| header.to_string()));
    (request_file(dir, form), headers)
}

/// One saturation run and the proxy CPU time it cost.
#[derive(Debug, Clone)]
pub struct CallRun {
    pub load: Saturation,
    /// `None` for the direct connection.
    pub proxy_cpu_seconds: Option<f64>,
}

impl CallRun {
    /// Proxy CPU per successful call, in microseconds (NaN without a proxy).
    pub fn cpu_per_call_us(&self) -> f64 {
        self.proxy_cpu_seconds.map_or(f64::NAN, |seconds| seconds * 1e6 / self.load.requests.max(1) as f64)
    }
}

/// Returns the connections and streams of every h2load gRPC run.
pub fn shape(settings: &Settings) -> H2Shape {
    H2Shape { connections: settings.grpc_connections, streams: settings.grpc_streams }
}

/// Warms up, then runs h2load as fast as 127.0.0.1:`port` responds to unary
/// calls of `form`, reading the CPU time of `pid` (the proxy) around it.
pub fn saturate(tools: &Tools, settings: &Settings, dir: &Path, port: u16, pid: Option<u32>, form: Form) -> anyhow::Result<CallRun> {
    let (body_file, headers) = unary_call(dir, form);
    let call = GrpcCall { path: grpc_wire::UNARY_PATH, headers, body_file: &body_file };
    load::h2load_grpc_saturation(&tools.h2load, port, &call, shape(settings), settings.warm_up)?;
    let cpu_before = pid.map(process::cpu_seconds);
    let load = load::h2load_grpc_saturation(&tools.h2load, port, &call, shape(settings), settings.saturation_duration)
        .with_context(|| format!("h2load {} run against port {port} failed", form.name()))?;
    let cpu_after = pid.map(process::cpu_seconds);
    Ok(CallRun { load, proxy_cpu_seconds: cpu_before.zip(cpu_after).map(|(before, after)| after - before) })
}
