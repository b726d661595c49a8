//! Rollout tracking through the config API: `apply --wait` returns once the
//! connected proxies have applied or rejected a version, `--if-version`
//! guards against concurrent changes, and `history` and `rollback` work
//! across a control plane restart.

use std::process::{Command, Output};

use crate::support::*;

/// Runs `legate` with `LEGATE_USER` set, so the history names the operator.
fn legate_as(user: &str, args: &[&str]) -> Output {
    Command::new(legate_bin()).args(args).env("LEGATE_USER", user).output().expect("legate runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_wait_history_and_rollback() {
    let dir = temp_dir("rollout");
    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let mut control_plane = ControlPlane::start(&dir.join("cp"));
    let server = control_plane.address.to_string();
    let proxies = [
        Proxy::start(&ads_bootstrap("rollout-a", control_plane.address), &dir),
        Proxy::start(&ads_bootstrap("rollout-b", control_plane.address), &dir),
    ];
    let connected = eventually(std::time::Duration::from_secs(30), || async {
        stdout(&legate(&["proxies", "--server", &server])).lines().filter(|line| line.starts_with("rollout-")).count() == 2
    })
    .await;
    assert!(connected, "both proxies connect");

    let v1 = write(&dir, "v1.yaml", &two_cluster_config(&[web.address], api.address, "v1"));
    let applied = legate_as("ana", &["apply", "-f", &v1, "--server", &server, "--wait", "--wait-timeout", "20"]);
    assert!(applied.status.success(), "{}{}", stdout(&applied), String::from_utf8_lossy(&applied.stderr));
    assert!(stdout(&applied).contains("version 1: 2 applied, 0 rejected, 0 pending"), "{}", stdout(&applied));
    let listener = proxies[0].listener("http").await;
    assert_eq!(http1_get(listener, "x", "/api/ok").await.unwrap(), (200, "api /v1/ok 0".to_string()));

    let v2 = write(&dir, "v2.yaml", &two_cluster_config(&[web.address], api.address, "v2"));
    let stale = legate_as("bo", &["apply", "-f", &v2, "--server", &server, "--if-version", "7"]);
    assert_eq!(stale.status.code(), Some(1), "a stale --if-version is refused");
    assert!(String::from_utf8_lossy(&stale.stderr).contains("version 1, not 7"), "{}", String::from_utf8_lossy(&stale.stderr));
    let current = legate_as("bo", &["apply", "-f", &v2, "--server", &server, "--if-version", "1", "--wait"]);
    assert!(current.status.success(), "{}", stdout(&current));
    let moved = eventually(std::time::Duration::from_secs(10), || async {
        http1_get(listener, "x", "/api/ok").await.map(|(_, body)| body).unwrap_or_default() == "api /v2/ok 0"
    })
    .await;
    assert!(moved, "version 2 is in force");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bad = write(&dir, "bad.yaml", &unbindable_listener(taken.local_addr().unwrap()));
    let rejected = legate_as("cy", &["apply", "-f", &bad, "--server", &server, "--wait", "--wait-timeout", "20"]);
    assert_eq!(rejected.status.code(), Some(1), "a rejected version fails the wait: {}", stdout(&rejected));
    let report = stdout(&rejected);
    assert!(report.contains("version 3: 0 applied, 2 rejected"), "{report}");
    assert!(report.contains("rollout-a rejected LDS"), "{report}");
    assert!(report.contains("rollout-b rejected LDS"), "{report}");

    let status = legate(&["status", "2", "--server", &server]);
    assert!(status.status.success());
    assert!(stdout(&status).contains("version 2: 2 applied, 0 rejected, 0 pending"), "{}", stdout(&status));

    control_plane.process.kill();
    control_plane = ControlPlane::start(&dir.join("cp"));
    let server = control_plane.address.to_string();
    let history = stdout(&legate(&["history", "--server", &server]));
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "versions 3, 2 and 1 survive a restart:\n{history}");
    assert!(rows[0].starts_with("3 "), "{history}");
    assert!(rows[0].contains("cy"), "{history}");
    assert!(rows[2].starts_with("1 "), "{history}");
    assert!(rows[2].contains("ana"), "{history}");

    let restored = legate_as("dee", &["rollback", "1", "--server", &server]);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    assert!(stdout(&restored).contains("version 4 restores version 1"), "{}", stdout(&restored));
    let history = stdout(&legate(&["history", "--server", &server]));
    assert!(history.lines().nth(1).is_some_and(|row| row.starts_with("4 ") && row.contains("dee") && row.ends_with("rollback to 1")), "{history}");

    let unknown = legate(&["rollback", "99", "--server", &server]);
    assert!(!unknown.status.success(), "a version outside the history is refused");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not in the history"), "{}", String::from_utf8_lossy(&unknown.stderr));

    let config = stdout(&legate(&["get", "--server", &server]));
    assert!(!config.contains("name: taken"), "the rollback removed the listener added after version 1");
}
