//! Legate's control plane for scenarios 9 and 10: `legate control-plane`
//! pinned to the proxy core, resources files rendered from
//! `peers/legate/resources.yaml`, `legate apply` to push them, and a Legate
//! proxy that takes its config over ADS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::peers::render;
use crate::process::{self, Pinned, PROXY_CORE};

const RESOURCES: &str = include_str!("../peers/legate/resources.yaml");
const RESOURCE_ROUTE: &str = include_str!("../peers/legate/scale_route.yaml");
const RESOURCE_CLUSTER: &str = include_str!("../peers/legate/resource_cluster.yaml");
const ADS_BOOTSTRAP: &str = include_str!("../peers/legate/ads_bootstrap.yaml");

/// A running `legate control-plane` with its own data folder.
pub struct ControlPlane {
    pub process: Pinned,
    pub port: u16,
    legate_bin: PathBuf,
    dir: PathBuf,
}

impl ControlPlane {
    /// Starts a control plane with an empty data folder under `dir`.
    pub fn start(legate_bin: &Path, dir: &Path) -> anyhow::Result<ControlPlane> {
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        let data_dir = dir.join("control-plane-data");
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).with_context(|| format!("failed to empty {}", data_dir.display()))?;
        }
        let port = process::free_port()?;
        let args = vec![
            "control-plane".to_string(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--data-dir={}", data_dir.display()),
        ];
        let process = Pinned::spawn("control-plane", PROXY_CORE, legate_bin, &args, &[("RUST_LOG", "warn")], dir)?;
        process::wait_for_port(port, Duration::from_secs(10)).with_context(|| format!("the control plane did not start; see {}", dir.display()))?;
        Ok(ControlPlane { process, port, legate_bin: legate_bin.to_path_buf(), dir: dir.to_path_buf() })
    }

    /// Runs `legate apply -f FILE` on the proxy core and returns how long it
    /// took. Fails when the control plane rejected the change. The config
    /// work of nginx and HAProxy runs in their master processes on the proxy
    /// core, so this keeps the load core's work the same for every proxy.
    pub fn apply(&self, file: &Path) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let output = Command::new("taskset")
            .arg("-c")
            .arg(PROXY_CORE.to_string())
            .arg(&self.legate_bin)
            .args(["apply", "-f"])
            .arg(file)
            .arg(format!("--server=127.0.0.1:{}", self.port))
            .env("LEGATE_USER", "legate-bench")
            .output()
            .context("failed to run legate apply")?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            anyhow::bail!(
                "legate apply -f {} failed with {}: {}{}",
                file.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(elapsed)
    }

    /// Writes a resources file into the control plane's folder and returns its path.
    pub fn write_resources(&self, name: &str, resources: &Resources) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, resources.render()).with_context(|| format!("failed to write {}", path.display()))?;
        Ok(path)
    }

    /// Starts a Legate proxy with one worker that takes its config from
    /// this control plane.
    pub fn start_proxy(&self, dir: &Path) -> anyhow::Result<Pinned> {
        let bootstrap = dir.join("ads-bootstrap.yaml");
        let values = [("admin_port", process::free_port()?.to_string()), ("control_plane_port", self.port.to_string())];
        std::fs::write(&bootstrap, render(ADS_BOOTSTRAP, &values)).with_context(|| format!("failed to write {}", bootstrap.display()))?;
        let args = vec!["proxy".to_string(), "--config".to_string(), bootstrap.display().to_string(), "--concurrency".to_string(), "1".to_string()];
        Pinned::spawn("legate", PROXY_CORE, &self.legate_bin, &args, &[("RUST_LOG", "warn")], dir)
    }
}

/// Settings of one resources file.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    pub listen_port: u16,
    pub upstream_port: u16,
    /// Extra clusters, each with a route `/svc-N/`.
    pub scale: usize,
    /// The catch-all route's timeout in seconds; a push changes it.
    pub route_timeout_seconds: u32,
    /// Path prefix of the route to the echo cluster.
    pub catch_all_prefix: &'static str,
}

impl Resources {
    pub fn render(&self) -> String {
        let upstream_port = self.upstream_port.to_string();
        let repeat = |template: &str| -> String {
            let mut text = String::with_capacity(template.len() * self.scale);
            for index in 0..self.scale {
                text.push_str(&render(template, &[("index", index.to_string()), ("upstream_port", upstream_port.clone())]));
            }
            text.trim_end().to_string()
        };
        let values = [
            ("listen_port", self.listen_port.to_string()),
            ("upstream_port", upstream_port.clone()),
            ("route_timeout", format!("{}s", self.route_timeout_seconds)),
            ("catch_all_prefix", self.catch_all_prefix.to_string()),
            ("scale_routes", repeat(RESOURCE_ROUTE)),
            ("scale_clusters", repeat(RESOURCE_CLUSTER)),
        ];
        render(RESOURCES, &values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_render_every_scale_entry() {
        let resources = Resources { listen_port: 5000, upstream_port: 4000, scale: 3, route_timeout_seconds: 16, catch_all_prefix: "/echo/" };
        let text = resources.render();
        assert!(!text.contains("{{"), "placeholder left:\n{text}");
        assert!(text.contains("prefix: \"/svc-2/\""));
        assert!(text.contains("name: svc-2"));
        assert!(text.contains("timeout: 16s"));
        assert!(text.contains("port_value: 5000"));
        assert!(text.contains("prefix: \"/echo/\""));
    }
}
