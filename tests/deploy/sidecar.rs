//! The sidecar scenario without Kubernetes: a control plane, an application
//! and its proxy, started with the example's sidecar arguments and the
//! ConfigMap's bootstrap, with only the addresses changed for loopback.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::manifests::documents;
use crate::support::*;
use crate::{deploy_dir, read};

const POD_NAME: &str = "echo-5c9f7d8b6d-x2x7q";
const POD_NAMESPACE: &str = "demo";

/// Replaces `from` with `to` in `text`, failing when `from` is absent, so a
/// changed manifest cannot silently leave a cluster address in place.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected {from:?} in the deploy file");
    text.replace(from, to)
}

/// The sidecar's arguments from deploy/example/app.yaml, with `$(VAR)`
/// expanded as the kubelet does from the downward API.
fn sidecar_args(bootstrap_path: &str, token_path: &str) -> Vec<String> {
    let objects = documents(&read(&deploy_dir().join("example/app.yaml")));
    let pod = &objects[0]["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    let environment = HashMap::from([
        ("POD_NAME", POD_NAME.to_string()),
        ("POD_NAMESPACE", POD_NAMESPACE.to_string()),
        ("LEGATE_SERVICE_CLUSTER", labels["app"].as_str().unwrap().to_string()),
    ]);
    let sidecar = &pod["spec"]["initContainers"][0];
    let declared: Vec<&str> = sidecar["env"].as_array().unwrap().iter().map(|env| env["name"].as_str().unwrap()).collect();
    assert_eq!(declared, ["POD_NAME", "POD_NAMESPACE", "LEGATE_SERVICE_CLUSTER"]);

    sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(Value::as_str)
        .map(|arg| expand(arg.unwrap(), &environment))
        .map(|arg| match arg.as_str() {
            "/etc/legate/bootstrap.yaml" => bootstrap_path.to_string(),
            "/etc/legate-ads/token" => token_path.to_string(),
            _ => arg,
        })
        .collect()
}

fn expand(arg: &str, environment: &HashMap<&str, String>) -> String {
    environment.iter().fold(arg.to_string(), |arg, (name, value)| arg.replace(&format!("$({name})"), value))
}

/// The ConfigMap's bootstrap with the control plane, the application and
/// every listener moved to loopback addresses of this test.
fn loopback_bootstrap(control_plane: std::net::SocketAddr, app: std::net::SocketAddr) -> String {
    let bootstrap = read(&deploy_dir().join("sidecar/bootstrap.yaml"));
    let bootstrap = substitute(
        &bootstrap,
        "legate-control-plane.legate-system.svc.cluster.local, port_value: 18000",
        &format!("127.0.0.1, port_value: {}", control_plane.port()),
    );
    let bootstrap = substitute(&bootstrap, "127.0.0.1, port_value: 8080", &format!("127.0.0.1, port_value: {}", app.port()));
    let bootstrap = substitute(&bootstrap, "0.0.0.0, port_value: 9901", "127.0.0.1, port_value: 0");
    let bootstrap = substitute(&bootstrap, "0.0.0.0, port_value: 15006", "127.0.0.1, port_value: 0");
    substitute(&bootstrap, "127.0.0.1, port_value: 15001", "127.0.0.1, port_value: 0")
}

fn spawn_sidecar(args: &[String]) -> Proxy {
    let mut child = Command::new(legate_bin())
        .args(args)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_string()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("legate starts");
    let stdout = child.stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let process = Process { child, lines };
    let first = process.lines.recv_timeout(std::time::Duration::from_secs(60)).expect("the proxy prints its admin address");
    let admin = first.strip_prefix("admin listening on ").unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    Proxy { admin: admin.parse().unwrap(), process }
}

fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_pod_without_kubernetes() {
    let dir = temp_dir("sidecar");
    let token = dir.join("ads-token");
    std::fs::write(&token, "sidecar-token").unwrap();
    let control_plane = ControlPlane::start_with(&dir.join("control-plane"), "127.0.0.1:0", &["--ads-token-file", token.to_str().unwrap()]);
    let app = Upstream::start("app").await;
    let remote = Upstream::start("remote-echo").await;

    // The mesh routes as deploy/config has them, with the echo Service's
    // cluster address replaced by a local upstream.
    let mesh = substitute(
        &read(&deploy_dir().join("config/mesh.yaml")),
        "echo.demo.svc.cluster.local, port_value: 80 }",
        &format!("127.0.0.1, port_value: {} }}", remote.address.port()),
    );
    let applied = control_plane.apply(&mesh);
    assert!(applied.status.success(), "applying mesh.yaml failed: {}", String::from_utf8_lossy(&applied.stderr));

    let bootstrap_path = dir.join("bootstrap.yaml");
    std::fs::write(&bootstrap_path, loopback_bootstrap(control_plane.address, app.address)).unwrap();
    let args = sidecar_args(bootstrap_path.to_str().unwrap(), token.to_str().unwrap());
    let proxy = spawn_sidecar(&args);
    proxy.wait_ready().await;

    let inbound = proxy.listener("inbound").await;
    let (status, body) = http1_get(inbound, "echo.demo", "/orders").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "app /orders 0"), "inbound traffic reaches the application");

    let outbound = proxy.listener("outbound").await;
    let (status, body) = http1_get(outbound, "echo.demo.svc.cluster.local", "/ping").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "remote-echo /ping 0"), "the app's outbound call reaches the service");
    let (status, _) = http1_get(outbound, "unknown.demo", "/ping").await.unwrap();
    assert_eq!(status, 404, "a host without an outbound route");

    let listed = legate(&["proxies", "--server", &control_plane.address.to_string()]);
    let table = String::from_utf8_lossy(&listed.stdout);
    let row = table
        .lines()
        .find(|line| line.starts_with(&format!("{POD_NAME}.{POD_NAMESPACE} ")))
        .unwrap_or_else(|| panic!("legate proxies lists the pod:\n{table}"));
    assert_eq!(row.split_whitespace().nth(1), Some("echo"), "node cluster from the app label: {row}");

    if let Some(kib) = resident_kib(proxy.process.child.id()) {
        eprintln!("sidecar proxy RSS after traffic: {kib} KiB");
    }
}
