//! The state file: a restarted control plane serves the same config, and a
//! damaged file stops start-up instead of being replaced.

mod support;

use legate_api::legate::config::v1::StoredConfig;
use legate_control_plane::persist::{encode_state, CONVERTED_JSON_FILE_NAME, HISTORY_DIR_NAME, JSON_STATE_FILE_NAME, STATE_FILE_NAME};
use prost::Message;
use legate_control_plane::{ControlPlane, LoadError, PersistError};
use support::*;

#[tokio::test]
async fn config_survives_restart() {
    let data = TempDir::new("survives-restart");
    let server = TestServer::start(ControlPlane::open(data.path()).expect("open empty data dir")).await;
    server.apply(&[static_cluster("a", 8081), route_config("routes", &["a"])], vec![]).await.expect("first apply");
    server.apply(&[static_cluster("b", 8082)], vec![]).await.expect("second apply");
    let before = server.plane.store().snapshot();
    server.stop().await.expect("server stops");

    let restarted = ControlPlane::open(data.path()).expect("reopen data dir");
    let after = restarted.store().snapshot();

    assert_eq!(after.version(), 2);
    assert_eq!(after.type_version(CDS), 2);
    assert_eq!(after.type_version(RDS), 1);
    assert_eq!(after.type_version(LDS), 0);
    assert_eq!(after.packed_in_push_order(), before.packed_in_push_order());
}

#[tokio::test]
async fn restart_serves_same_version() {
    let data = TempDir::new("serves-same-version");
    let first = TestServer::start(ControlPlane::open(data.path()).expect("open")).await;
    first.apply(&[static_cluster("a", 8081)], vec![]).await.expect("apply");
    first.stop().await.expect("server stops");

    let second = TestServer::start(ControlPlane::open(data.path()).expect("reopen")).await;
    let mut proxy = second.ads_client("proxy-1").await;
    proxy.subscribe(CDS, &[]).await;
    let clusters = proxy.next_of(CDS).await;

    assert_eq!(clusters.version_info, "1");
    assert_eq!(names(&clusters.resources), ["a"]);
    let again = second.apply(&[static_cluster("a", 8081)], vec![]).await.expect("identical apply");
    assert!(!again.changed, "the reloaded config is byte-identical to the applied one");
}

#[tokio::test]
async fn state_file_holds_the_stored_config() {
    let data = TempDir::new("stored-config");
    let server = TestServer::start(ControlPlane::open(data.path()).expect("open")).await;
    server.apply(&[static_cluster("web", 8080)], vec![]).await.expect("apply");

    let stored = read_stored(&data.path().join(STATE_FILE_NAME));

    assert_eq!(stored.version, 1);
    assert_eq!(names(&stored.resources), ["web"]);
    assert_eq!(stored.resources[0].type_url, CDS.type_url());
    assert_eq!(stored.resources, pack(&[static_cluster("web", 8080)]), "each resource is kept as applied");
    assert_eq!(stored.type_versions.get(CDS.type_url()), Some(&1));
    let mut entries: Vec<String> =
        std::fs::read_dir(data.path()).expect("list data dir").map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
    entries.sort();
    assert_eq!(entries, [STATE_FILE_NAME, HISTORY_DIR_NAME], "no temporary file is left behind");
    let history: Vec<_> = std::fs::read_dir(data.path().join(HISTORY_DIR_NAME)).expect("list history").map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(history, ["1.pb"], "the version is kept in the history");
}

#[tokio::test]
async fn json_state_file_converted() {
    let data = TempDir::new("json-converted");
    let json_path = data.path().join(JSON_STATE_FILE_NAME);
    let stored = serde_json::json!({
        "version": "3",
        "resources": [static_cluster("web", 8080)],
        "type_versions": { CDS.type_url(): "3" }
    });
    std::fs::write(&json_path, stored.to_string()).expect("write JSON state file");
    std::fs::create_dir(data.path().join(HISTORY_DIR_NAME)).expect("create history");
    let earlier = serde_json::json!({ "version": "2", "resources": [static_cluster("web", 8079)], "type_versions": { CDS.type_url(): "2" } });
    std::fs::write(data.path().join(HISTORY_DIR_NAME).join("2.json"), earlier.to_string()).expect("write JSON history file");

    let plane = ControlPlane::open(data.path()).expect("open converts the JSON file");

    assert_eq!(plane.store().snapshot().version(), 3);
    assert_eq!(plane.store().snapshot().packed_in_push_order(), pack(&[static_cluster("web", 8080)]));
    assert!(!json_path.exists(), "the JSON file is renamed once converted");
    assert!(data.path().join(CONVERTED_JSON_FILE_NAME).exists(), "the JSON file is kept under another name");
    assert_eq!(read_stored(&data.path().join(STATE_FILE_NAME)).version, 3, "the state file holds the converted config");
    let versions: Vec<u64> = plane.store().history().iter().map(|snapshot| snapshot.version()).collect();
    assert_eq!(versions, [3, 2], "the JSON history file is read too");
    let restarted = ControlPlane::open(data.path()).expect("reopen the converted directory");
    assert_eq!(restarted.store().snapshot().version(), 3);
}

#[tokio::test]
async fn missing_state_file_starts_empty() {
    let data = TempDir::new("missing-file");

    let plane = ControlPlane::open(&data.path().join("not-yet-created")).expect("open new data dir");

    assert_eq!(plane.store().snapshot().version(), 0);
    assert!(plane.store().snapshot().is_empty());
}

#[tokio::test]
async fn cut_state_file_stops_start_up() {
    let data = TempDir::new("cut-file");
    let path = data.path().join(STATE_FILE_NAME);
    let server = TestServer::start(ControlPlane::open(data.path()).expect("open")).await;
    server.apply(&[static_cluster("web", 8080)], vec![]).await.expect("apply");
    server.stop().await.expect("server stops");
    let whole = std::fs::read(&path).expect("read state file");

    for cut in [whole.len() - 1, whole.len() / 2, 0] {
        std::fs::write(&path, &whole[..cut]).expect("write cut file");

        let error = ControlPlane::open(data.path()).expect_err("cut file is rejected");

        assert!(matches!(error, LoadError::Persist(PersistError::Checksum { .. })), "cut at {cut}: {error:?}");
        assert!(error.to_string().contains(&path.display().to_string()), "error names the file: {error}");
        assert_eq!(std::fs::read(&path).expect("file still there").len(), cut, "file is left untouched");
    }
}

#[tokio::test]
async fn corrupt_json_state_file_stops_start_up() {
    let data = TempDir::new("corrupt-json-file");
    let path = data.path().join(JSON_STATE_FILE_NAME);
    std::fs::write(&path, "{\"version\": \"3\", \"resources\": [").expect("write corrupt file");

    let error = ControlPlane::open(data.path()).expect_err("corrupt file is rejected");

    assert!(matches!(error, LoadError::Persist(PersistError::CorruptJson { .. })), "{error:?}");
    assert!(error.to_string().contains(&path.display().to_string()), "error names the file: {error}");
    assert!(path.exists(), "file is left in place");
    assert!(!data.path().join(STATE_FILE_NAME).exists(), "no empty state file replaces it");
}

#[tokio::test]
async fn invalid_state_file_stops_start_up() {
    let data = TempDir::new("invalid-config");
    let path = data.path().join(STATE_FILE_NAME);
    let stored = StoredConfig {
        version: 4,
        resources: pack(&[route_config("routes", &["missing-cluster"])]),
        type_versions: [(RDS.type_url().to_string(), 4)].into(),
        ..Default::default()
    };
    std::fs::write(&path, encode_state(&stored)).expect("write state file");

    let error = ControlPlane::open(data.path()).expect_err("dangling reference is rejected");

    assert!(matches!(error, LoadError::Invalid { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "error names the file: {message}");
    assert!(message.contains("missing-cluster"), "error names the problem: {message}");
}

#[tokio::test]
async fn history_keeps_recent_versions() {
    let data = TempDir::new("history-limit");
    let plane = ControlPlane::open(data.path()).expect("open");
    let limit = legate_control_plane::store::HISTORY_LIMIT as u16;
    for port in 1..=limit + 5 {
        plane.store().apply(&pack(&[static_cluster("web", 8000 + port)]), &[]).await.expect("apply");
    }

    let kept: Vec<u64> = plane.store().history().iter().map(|snapshot| snapshot.version()).collect();
    assert_eq!(kept.len(), usize::from(limit));
    assert_eq!(kept.first(), Some(&u64::from(limit + 5)), "newest first");
    assert_eq!(kept.last(), Some(&6), "the oldest five are forgotten");
    let files = std::fs::read_dir(data.path().join(HISTORY_DIR_NAME)).expect("list history").count();
    assert_eq!(files, usize::from(limit), "their files are deleted too");

    let reopened = ControlPlane::open(data.path()).expect("reopen");
    let outcome = reopened.store().rollback(6, &Default::default()).await.expect("roll back to the oldest kept version");
    assert_eq!(outcome.version, u64::from(limit + 6));
    let restored = reopened.store().snapshot();
    assert_eq!(restored.origin().rolled_back_to, Some(6));
    assert_eq!(restored.len(), 1);
}

#[tokio::test]
async fn history_files_keep_their_version() {
    let data = TempDir::new("history-versions");
    let plane = ControlPlane::open(data.path()).expect("open");
    plane.store().apply(&pack(&[static_cluster("web", 8001)]), &[]).await.expect("first apply");
    plane.store().apply(&pack(&[static_cluster("web", 8002)]), &[]).await.expect("second apply");

    let history = data.path().join(HISTORY_DIR_NAME);
    let first = read_stored(&history.join("1.pb"));
    assert_eq!(first.version, 1, "a later save leaves the first version's file alone");
    assert_eq!(read_stored(&history.join("2.pb")).version, 2);
    assert_eq!(read_stored(&data.path().join(STATE_FILE_NAME)).version, 2);
    assert_eq!(first.resources, pack(&[static_cluster("web", 8001)]));
}

/// Reads a state file or history file.
fn read_stored(path: &std::path::Path) -> StoredConfig {
    StoredConfig::decode(std::fs::read(path).expect("read").as_slice()).expect("an encoded StoredConfig")
}
