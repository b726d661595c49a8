//! `legate demo` runs the whole system on loopback in one command, with the
//! config API and ADS guarded by tokens it creates.

use std::time::{Duration, Instant};

use crate::support::*;

/// Returns a port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_whole_system() {
    let dir = temp_dir("demo");
    let (port, admin_port) = (free_port(), free_port());
    let mut demo = Process::spawn(&["demo", "--port", &port.to_string(), "--admin-port", &admin_port.to_string(), "--data-dir", dir.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut server = None;
    while server.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = demo.lines.recv_timeout(left).expect("the demo prints its instructions");
        if let Some(rest) = line.trim().strip_prefix("legate get --server ") {
            server = rest.split(' ').next().map(str::to_string);
        }
    }
    let server = server.unwrap();
    let listener: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let routed = eventually(Duration::from_secs(30), || async { matches!(http1_get(listener, "demo", "/").await, Ok((200, _))) }).await;
    assert!(routed, "the demo proxy serves its listener");
    let (status, body) = http1_get(listener, "demo", "/api/users").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "api-1 answered GET /users\n");

    let token_file = dir.join("api-token");
    let anonymous = legate(&["get", "--server", &server]);
    assert!(!anonymous.status.success(), "the demo's config API needs its token");
    let allowed = legate(&["get", "--server", &server, "--token-file", token_file.to_str().unwrap()]);
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));

    use std::os::unix::fs::PermissionsExt;
    for name in ["api-token", "ads-token"] {
        let mode = std::fs::metadata(dir.join(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{name} is readable by its owner only");
    }

    let stopped = std::process::Command::new("kill").args(["-TERM", &demo.child.id().to_string()]).status().unwrap();
    assert!(stopped.success());
    let exited = eventually(Duration::from_secs(10), || {
        let status = demo.child.try_wait();
        async move { matches!(status, Ok(Some(_))) }
    })
    .await;
    assert!(exited, "the demo stops on SIGTERM");
    let closed = eventually(Duration::from_secs(10), || async { http1_get(listener, "demo", "/").await.is_err() }).await;
    assert!(closed, "the demo's proxy stops with it");
}
