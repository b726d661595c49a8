//! The targets under test: Legate, nginx and HAProxy started from the
//! checked-in templates under `crates/bench/peers/`, and the direct
//! connection to the echo upstream as the baseline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::grpc_client::{self, Form};
use crate::http_client::Connection;
use crate::process::{self, Pinned, PROXY_CORE};
use crate::tools::Tools;
use crate::websocket_client;

/// Something the load is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Legate,
    Nginx,
    Haproxy,
    /// The load generator talks to the echo upstream with no proxy between.
    Direct,
}

impl Target {
    pub const PROXIES: [Target; 3] = [Target::Legate, Target::Nginx, Target::Haproxy];
    pub const ALL: [Target; 4] = [Target::Legate, Target::Nginx, Target::Haproxy, Target::Direct];

    pub fn name(self) -> &'static str {
        match self {
            Target::Legate => "legate",
            Target::Nginx => "nginx",
            Target::Haproxy => "haproxy",
            Target::Direct => "direct",
        }
    }

    /// nginx and HAProxy: the proxies Legate is compared with.
    pub fn is_peer(self) -> bool {
        matches!(self, Target::Nginx | Target::Haproxy)
    }
}

/// The traffic a proxy config is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 keep-alive to the echo upstream (scenarios 1-3 and 8).
    Http1,
    /// gRPC over h2c on both sides (scenarios 4 and 5).
    Grpc,
    /// gRPC plus Legate's `grpc_web` filter (scenario 6; Legate only).
    GrpcWeb,
    /// HTTP/1.1 with WebSocket upgrades (scenario 7).
    WebSocket,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::WebSocket => "websocket",
        }
    }
}

/// What a proxy config is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub protocol: Protocol,
    pub upstream_port: u16,
    /// Extra clusters, each with one route (`/svc-N/`), beside the
    /// catch-all route to the echo cluster.
    pub scale: usize,
}

struct Templates {
    main: &'static str,
    route: &'static str,
    cluster: &'static str,
    file_name: &'static str,
}

/// Configs for the gRPC and WebSocket protocols, which have no scale blocks.
fn single_template(main: &'static str, file_name: &'static str) -> Option<Templates> {
    Some(Templates { main, route: "", cluster: "", file_name })
}

fn templates(target: Target, protocol: Protocol) -> Option<Templates> {
    match (protocol, target) {
        (Protocol::Grpc | Protocol::GrpcWeb, Target::Legate) => single_template(include_str!("../peers/legate/grpc.yaml"), "bootstrap.yaml"),
        (Protocol::Grpc, Target::Nginx) => single_template(include_str!("../peers/nginx/grpc.conf"), "nginx.conf"),
        (Protocol::Grpc, Target::Haproxy) => single_template(include_str!("../peers/haproxy/grpc.cfg"), "haproxy.cfg"),
        (Protocol::WebSocket, Target::Legate) => single_template(include_str!("../peers/legate/websocket.yaml"), "bootstrap.yaml"),
        (Protocol::WebSocket, Target::Nginx) => single_template(include_str!("../peers/nginx/websocket.conf"), "nginx.conf"),
        (Protocol::WebSocket, Target::Haproxy) => single_template(include_str!("../peers/haproxy/websocket.cfg"), "haproxy.cfg"),
        (Protocol::Http1, _) => http1_templates(target),
        (Protocol::GrpcWeb, _) | (_, Target::Direct) => None,
    }
}

fn http1_templates(target: Target) -> Option<Templates> {
    match target {
        Target::Legate => Some(Templates {
            main: include_str!("../peers/legate/bootstrap.yaml"),
            route: include_str!("../peers/legate/scale_route.yaml"),
            cluster: include_str!("../peers/legate/scale_cluster.yaml"),
            file_name: "bootstrap.yaml",
        }),
        Target::Nginx => Some(Templates {
            main: include_str!("../peers/nginx/nginx.conf"),
            route: include_str!("../peers/nginx/scale_route.conf"),
            cluster: include_str!("../peers/nginx/scale_cluster.conf"),
            file_name: "nginx.conf",
        }),
        Target::Haproxy => Some(Templates {
            main: include_str!("../peers/haproxy/haproxy.cfg"),
            route: include_str!("../peers/haproxy/scale_route.cfg"),
            cluster: include_str!("../peers/haproxy/scale_cluster.cfg"),
            file_name: "haproxy.cfg",
        }),
        Target::Direct => None,
    }
}

/// Replaces each `{{name}}` in `template` with its value.
pub fn render(template: &str, values: &[(&str, String)]) -> String {
    let mut text = template.to_string();
    for (name, value) in values {
        text = text.replace(&format!("{{{{{name}}}}}"), value);
    }
    text
}

/// Renders a target's config; the repeated blocks are rendered once per
/// extra cluster.
fn render_config(templates: &Templates, layout: Layout, ports: &Ports, dir: &Path) -> String {
    let upstream_port = layout.upstream_port.to_string();
    let repeat = |template: &str| -> String {
        (0..layout.scale)
            .map(|index| render(template, &[("index", index.to_string()), ("upstream_port", upstream_port.clone())]))
            .collect()
    };
    let values = [
        ("listen_port", ports.listen.to_string()),
        ("admin_port", ports.admin.to_string()),
        ("upstream_port", upstream_port.clone()),
        ("dir", dir.display().to_string()),
        ("scale_routes", repeat(templates.route).trim_end().to_string()),
        ("scale_clusters", repeat(templates.cluster).trim_end().to_string()),
        ("grpc_web_filter", if layout.protocol == Protocol::GrpcWeb { GRPC_WEB_FILTER.to_string() } else { String::new() }),
    ];
    render(templates.main, &values)
}

/// Legate's gRPC-Web filter, placed before the router in `peers/legate/grpc.yaml`.
const GRPC_WEB_FILTER: &str = "          - name: envoy.filters.http.grpc_web
            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb }";

struct Ports {
    listen: u16,
    admin: u16,
}

/// A proxy process pinned to the proxy core.
pub struct RunningProxy {
    pub target: Target,
    pub port: u16,
    pub process: Pinned,
}

/// Starts `target` (not `Direct`) with a config for `layout` written into
/// `dir`, and waits until it forwards a request to the upstream.
pub fn start(target: Target, layout: Layout, tools: &Tools, legate_bin: &Path, dir: &Path) -> anyhow::Result<RunningProxy> {
    start_with(target, layout, tools, legate_bin, dir, false)
}

/// Starts `target` as `start` does, but HAProxy in master-worker mode, so
/// that `SIGUSR2` to its PID reloads it as `SIGHUP` reloads nginx.
pub fn start_reloadable(target: Target, layout: Layout, tools: &Tools, legate_bin: &Path, dir: &Path) -> anyhow::Result<RunningProxy> {
    start_with(target, layout, tools, legate_bin, dir, true)
}

fn start_with(target: Target, layout: Layout, tools: &Tools, legate_bin: &Path, dir: &Path, reloadable: bool) -> anyhow::Result<RunningProxy> {
    let templates = templates(target, layout.protocol)
        .with_context(|| format!("{} has no {} config (the direct connection has none at all)", target.name(), layout.protocol.name()))?;
    let dir = dir.join(format!("{}-{}-scale{}", target.name(), layout.protocol.name(), layout.scale));
    std::fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let ports = Ports { listen: process::free_port()?, admin: process::free_port()? };
    let config_path = dir.join(templates.file_name);
    std::fs::write(&config_path, render_config(&templates, layout, &ports, &dir))
        .with_context(|| format!("failed to write {}", config_path.display()))?;

    let (program, mut args, env) = command_line(target, tools, legate_bin, &config_path);
    if reloadable && target == Target::Haproxy {
        args.insert(0, "-W".into());
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(key, value)| (*key, value.as_str())).collect();
    let mut process = Pinned::spawn(target.name(), PROXY_CORE, &program, &args, &env, &dir)?;
    process::wait_for_port(ports.listen, Duration::from_secs(10))
        .with_context(|| format!("{} did not start; see {}", target.name(), dir.display()))?;
    process.ensure_running()?;
    let proxy = RunningProxy { target, port: ports.listen, process };
    match layout.protocol {
        Protocol::Http1 => proxy.check_forwarding("/")?,
        Protocol::Grpc => grpc_client::check_unary(proxy.port, Form::Grpc, 64).with_context(|| format!("{} does not forward gRPC", target.name()))?,
        Protocol::GrpcWeb => {
            for form in Form::ALL {
                grpc_client::check_unary(proxy.port, form, 64).with_context(|| format!("{} does not forward {}", target.name(), form.name()))?;
            }
        }
        Protocol::WebSocket => websocket_client::check_echo(proxy.port).with_context(|| format!("{} does not proxy WebSockets", target.name()))?,
    }
    Ok(proxy)
}

fn command_line(target: Target, tools: &Tools, legate_bin: &Path, config: &Path) -> (PathBuf, Vec<String>, Vec<(&'static str, String)>) {
    let config = config.display().to_string();
    match target {
        Target::Legate => (
            legate_bin.to_path_buf(),
            vec!["proxy".into(), "--config".into(), config, "--concurrency".into(), "1".into()],
            vec![("RUST_LOG", "warn".to_string())],
        ),
        Target::Nginx => (tools.nginx.clone(), vec!["-c".into(), config, "-e".into(), "stderr".into()], Vec::new()),
        // -db keeps HAProxy in the foreground as one process.
        Target::Haproxy => (tools.haproxy.clone(), vec!["-db".into(), "-f".into(), config], Vec::new()),
        Target::Direct => unreachable!("checked by the caller"),
    }
}

impl RunningProxy {
    /// Sends one GET through the proxy and checks that the echo upstream's
    /// 1 KiB payload comes back with status 200.
    pub fn check_forwarding(&self, path: &str) -> anyhow::Result<()> {
        let reply = Connection::open(self.port)?.get(path)?;
        if reply.status != 200 || reply.body_len == 0 {
            anyhow::bail!("{} answered GET {path} with {} and {} body bytes, expected 200 from the echo upstream", self.target.name(), reply.status, reply.body_len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_without_placeholders() {
        let layout = Layout { protocol: Protocol::Http1, upstream_port: 4000, scale: 2 };
        let ports = Ports { listen: 5000, admin: 5001 };
        for target in Target::PROXIES {
            let text = render_config(&templates(target, Protocol::Http1).unwrap(), layout, &ports, Path::new("/tmp/x"));
            assert!(!text.contains("{{"), "{} config has a placeholder left:\n{text}", target.name());
            assert!(text.contains("svc-1/"), "{} config has the scale routes", target.name());
            assert!(text.contains("4000") && text.contains("5000"), "{} config has the ports", target.name());
        }
    }

    #[test]
    fn grpc_and_websocket_templates_render() {
        let ports = Ports { listen: 5000, admin: 5001 };
        for protocol in [Protocol::Grpc, Protocol::WebSocket] {
            let layout = Layout { protocol, upstream_port: 4000, scale: 0 };
            for target in Target::PROXIES {
                let text = render_config(&templates(target, protocol).unwrap(), layout, &ports, Path::new("/tmp/x"));
                let name = format!("{} {}", target.name(), protocol.name());
                assert!(!text.contains("{{"), "{name} config has a placeholder left:\n{text}");
                assert!(text.contains("127.0.0.1:4000") || text.contains("port_value: 4000"), "{name} config has the upstream port");
                assert!(!text.contains("envoy.filters.http.grpc_web"), "{name} config has no gRPC-Web filter");
            }
        }
        assert!(templates(Target::Nginx, Protocol::GrpcWeb).is_none());
    }

    #[test]
    fn grpc_web_filter_precedes_router() {
        let layout = Layout { protocol: Protocol::GrpcWeb, upstream_port: 4000, scale: 0 };
        let ports = Ports { listen: 5000, admin: 5001 };
        let text = render_config(&templates(Target::Legate, Protocol::GrpcWeb).unwrap(), layout, &ports, Path::new("/tmp/x"));
        let filter = text.find("envoy.filters.http.grpc_web").expect("grpc_web filter");
        assert!(filter < text.find("envoy.filters.http.router").expect("router"));
    }
}
