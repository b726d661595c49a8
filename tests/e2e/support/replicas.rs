//! Helpers for the tests of replicated control planes: replicas sharing one
//! etcd, a proxy bootstrap that lists every replica, and a client that keeps
//! sending requests and counts the failures.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::etcd::Etcd;
use super::{http1_get, legate, ControlPlane};

/// Starts a control-plane replica named `replica_id` on the config in `etcd`
/// under `prefix`, with an admin port that [`etcd_watching`] reads.
pub fn start_replica(dir: &Path, etcd: &Etcd, prefix: &str, replica_id: &str) -> (ControlPlane, SocketAddr) {
    let url = etcd.url();
    let extra = ["--etcd-endpoints", url.as_str(), "--etcd-prefix", prefix, "--replica-id", replica_id, "--admin-listen", "127.0.0.1:0"];
    let replica = ControlPlane::start_with(&dir.join(replica_id), "127.0.0.1:0", &extra);
    let admin = replica.process.address_after("admin listening on");
    (replica, admin)
}

/// Returns whether the replica with admin port `admin` reports its etcd
/// watch as up.
pub async fn etcd_watching(admin: SocketAddr) -> bool {
    let Ok((200, metrics)) = http1_get(admin, "admin", "/metrics").await else {
        return false;
    };
    super::sample(&metrics, "legate_control_plane_etcd_watching") == Some(1.0)
}

/// Returns the text of `output`'s stdout and stderr.
pub fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Returns the replicas that `legate proxies --server server` names as
/// serving `node_id`: the live one, and for a few seconds after a replica
/// dies, that one too.
pub fn replicas_serving(server: SocketAddr, node_id: &str) -> Vec<String> {
    let listed = legate(&["proxies", "--server", &server.to_string()]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    // Columns: NODE CLUSTER REPLICA ADDRESS ...
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|columns| columns.first() == Some(&node_id))
        .filter_map(|columns| columns.get(2).map(|replica| replica.to_string()))
        .collect()
}

/// Bootstrap of a proxy whose ADS cluster lists every replica in
/// `replicas`, so that it fails over from one to the next.
pub fn ads_bootstrap_replicas(node_id: &str, replicas: &[SocketAddr]) -> String {
    let endpoints: Vec<String> = replicas
        .iter()
        .map(|address| {
            format!("{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}", address.port())
        })
        .collect();
    format!(
        r#"
node: {{ id: {node_id}, cluster: test }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds }} }}]
  cds_config: {{ ads: {{}} }}
  lds_config: {{ ads: {{}} }}
static_resources:
  clusters:
  - name: xds
    connect_timeout: 1s
    http2_protocol_options: {{}}
    load_assignment:
      cluster_name: xds
      endpoints: [{{ lb_endpoints: [{}] }}]
"#,
        endpoints.join(", ")
    )
}

/// Results of the requests a [`Traffic`] sent.
#[derive(Debug, Default, Clone)]
pub struct TrafficReport {
    pub succeeded: usize,
    /// Each failed request: an error or a status other than 200.
    pub failures: Vec<String>,
    /// Body of the latest successful response.
    pub last_body: String,
}

/// Requests sent one after another, each on a new connection, until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<TrafficReport>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub fn start(listener: SocketAddr, path: &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(TrafficReport::default()));
        let (stopped, shared) = (stop.clone(), report.clone());
        let task = tokio::spawn(async move {
            while !stopped.load(Ordering::Relaxed) {
                let result = tokio::time::timeout(Duration::from_secs(5), http1_get(listener, "x", path)).await;
                {
                    let mut report = shared.lock().unwrap();
                    match result {
                        Ok(Ok((200, body))) => {
                            report.succeeded += 1;
                            report.last_body = body;
                        }
                        Ok(Ok((status, body))) => report.failures.push(format!("status {status}: {body}")),
                        Ok(Err(error)) => report.failures.push(error),
                        Err(_) => report.failures.push("timed out after 5 s".to_string()),
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Traffic { stop, report, task }
    }

    /// Returns what was seen so far.
    pub fn report(&self) -> TrafficReport {
        self.report.lock().unwrap().clone()
    }

    /// Stops sending and returns the final report.
    pub async fn stop(self) -> TrafficReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("traffic task");
        let report = self.report.lock().unwrap().clone();
        report
    }
}
