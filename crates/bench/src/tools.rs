//! External programs the harness drives: the peers, the load generators and
//! `taskset`, found on PATH, with their versions for the results page.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// Debian packages that provide the tools; `crates/bench/bench.sh` installs them.
pub const DEBIAN_PACKAGES: &str = "nginx-light haproxy wrk nghttp2-client util-linux";

pub struct Tools {
    pub nginx: PathBuf,
    pub haproxy: PathBuf,
    pub wrk: PathBuf,
    pub h2load: PathBuf,
    /// One line per tool, for the results page.
    pub versions: Vec<String>,
}

impl Tools {
    /// Finds every tool or fails naming the missing one and its package.
    pub fn find() -> anyhow::Result<Tools> {
        find_program("taskset")?;
        let nginx = find_program("nginx")?;
        let haproxy = find_program("haproxy")?;
        let wrk = find_program("wrk")?;
        let h2load = find_program("h2load")?;
        let versions = vec![
            version_line(&nginx, "-v"),
            version_line(&haproxy, "-v"),
            version_line(&wrk, "-v"),
            version_line(&h2load, "--version"),
        ];
        Ok(Tools { nginx, haproxy, wrk, h2load, versions })
    }
}

fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("{name} not found on PATH; install the Debian packages {DEBIAN_PACKAGES} (crates/bench/bench.sh does)"))
}

/// The first non-empty line a tool prints about its version (nginx and wrk
/// print it to stderr).
fn version_line(program: &Path, flag: &str) -> String {
    let Ok(output) = Command::new(program).arg(flag).output() else {
        return format!("{}: version unknown", program.display());
    };
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    text.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("version unknown").to_string()
}
