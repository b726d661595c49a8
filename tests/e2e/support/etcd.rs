//! A real etcd server for the tests of replicated control planes: one member
//! on loopback with its own data folder, which a test can kill and start
//! again on the same ports and data.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Times etcd is started on new ports when its ports were taken between
/// choosing and binding them.
const START_ATTEMPTS: usize = 5;

pub struct Etcd {
    child: Option<Child>,
    client: SocketAddr,
    peer: SocketAddr,
    data_dir: PathBuf,
    /// File that receives etcd's log, named in failure messages.
    log: PathBuf,
}

impl Etcd {
    /// Starts etcd with its data in `dir`, and waits until it serves.
    /// Panics when the `etcd` binary is missing, because the tests that need
    /// it must fail rather than pass without it.
    pub fn start(dir: &Path) -> Etcd {
        let binary = etcd_binary();
        for _ in 0..START_ATTEMPTS {
            // etcd cannot listen on port 0 and report the port, so free ports
            // are found by binding and closing them first.
            let mut etcd =
                Etcd { child: None, client: free_port(), peer: free_port(), data_dir: dir.join("etcd-data"), log: dir.join("etcd.log") };
            if etcd.spawn(&binary) {
                return etcd;
            }
        }
        panic!("etcd did not start in {START_ATTEMPTS} attempts; see its log {}", dir.join("etcd.log").display());
    }

    /// Returns the client URL to pass as `--etcd-endpoints`.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Kills etcd at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes etcd with SIGSTOP: its sockets stay open, but it responds to
    /// nothing until [`Etcd::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes etcd after [`Etcd::pause`] with SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("etcd is running");
        let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {} failed", child.id());
    }

    /// Starts etcd again on the same ports and data after [`Etcd::kill`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is still running");
        assert!(self.spawn(&etcd_binary()), "etcd did not restart on {}", self.client);
    }

    /// Runs etcd and waits for its health endpoint. Returns false when the
    /// process exits first, as it does when a port is taken.
    fn spawn(&mut self, binary: &Path) -> bool {
        let client = format!("http://{}", self.client);
        let peer = format!("http://{}", self.peer);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("open the etcd log");
        let child = Command::new(binary)
            .args(["--name", "test", "--data-dir", self.data_dir.to_str().unwrap()])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}"), "--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|error| panic!("failed to run {}: {error}", binary.display()));
        self.child = Some(child);
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            if health_is_ok(self.client) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd at {} did not report healthy within 30 seconds; see its log {}", self.client, self.log.display());
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Finds `etcd` on the PATH, as Debian's etcd-server package installs it.
fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("etcd")).find(|candidate| candidate.is_file()).unwrap_or_else(|| {
        panic!("the etcd binary is not on the PATH; install it with `apt-get install etcd-server` (.ci/run does)")
    })
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("bind a free port")
}

/// Asks etcd's `GET /health` with a plain blocking HTTP/1.1 request.
fn health_is_ok(address: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") && response.contains("\"health\":\"true\"")
}
