//! A control plane started with an API token accepts config API calls only
//! with that token, while proxies keep using ADS.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_api_requires_token() {
    let dir = temp_dir("api-token");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-api-token\n").unwrap();
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "guess").unwrap();
    let control_plane = ControlPlane::start_with(&dir.join("cp"), "127.0.0.1:0", &["--api-token-file", token.to_str().unwrap()]);
    let server = control_plane.address.to_string();

    let web = Upstream::start("web").await;
    let api = Upstream::start("api").await;
    let file = dir.join("config.yaml");
    std::fs::write(&file, two_cluster_config(&[web.address], api.address, "v1")).unwrap();
    let file = file.to_str().unwrap();

    let anonymous = legate(&["apply", "-f", file, "--server", &server]);
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("API token"), "{}", String::from_utf8_lossy(&anonymous.stderr));

    let guessed = legate(&["apply", "-f", file, "--server", &server, "--token-file", wrong.to_str().unwrap()]);
    assert!(!guessed.status.success(), "a wrong token is rejected");

    let allowed = legate(&["apply", "-f", file, "--server", &server, "--token-file", token.to_str().unwrap()]);
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));

    let get = std::process::Command::new(legate_bin())
        .args(["get", "--server", &server])
        .env("LEGATE_API_TOKEN_FILE", &token)
        .output()
        .unwrap();
    assert!(get.status.success(), "the token file can come from the environment");

    let proxy = Proxy::start(&ads_bootstrap("token-proxy", control_plane.address), &dir);
    proxy.wait_ready().await;
    let listener = proxy.listener("http").await;
    assert_eq!(http1_get(listener, "x", "/api/ok").await.unwrap().0, 200, "ADS needs no API token");
}
