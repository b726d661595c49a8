//! The config API over gRPC: apply, get, and rejection of invalid configs.

mod support;

use legate_api::legate::config::v1::GetConfigRequest;
use legate_control_plane::api::validation_errors;
use legate_control_plane::ControlPlane;
use support::*;
use tonic::Code;

#[tokio::test]
async fn applied_config_is_returned_in_push_order() {
    let server = TestServer::start(ControlPlane::in_memory()).await;

    let applied = server
        .apply(&[route_config("routes", &["web"]), listener("http", 10000, "routes"), static_cluster("web", 8080)], vec![])
        .await
        .expect("valid config is accepted");
    assert_eq!(applied.version, "1");
    assert!(applied.changed);
    assert_eq!(applied.added.len(), 3);
    assert!(applied.modified.is_empty());
    assert!(applied.removed.is_empty());

    let config = server.config_client().await.get_config(GetConfigRequest::default()).await.expect("get config").into_inner();
    assert_eq!(config.version, "1");
    assert_eq!(names(&config.resources), ["web", "http", "routes"]);
    assert_eq!(config.resources[0].type_url, CDS.type_url());
    assert_eq!(config.resources[1].type_url, LDS.type_url());
    assert_eq!(config.resources[2].type_url, RDS.type_url());
}

#[tokio::test]
async fn apply_reports_added_modified_and_removed() {
    let server = TestServer::start(ControlPlane::in_memory()).await;
    server.apply(&[static_cluster("a", 8081), static_cluster("b", 8082)], vec![]).await.expect("first apply");

    let applied = server
        .apply(&[static_cluster("a", 9091), static_cluster("c", 8083)], vec![removal(CDS, "b")])
        .await
        .expect("second apply");

    assert_eq!(applied.version, "2");
    assert_eq!(applied.added.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["c"]);
    assert_eq!(applied.modified.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(applied.removed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["b"]);
    assert_eq!(applied.removed[0].type_url, CDS.type_url());
}

#[tokio::test]
async fn invalid_apply_lists_every_error() {
    let server = TestServer::start(ControlPlane::in_memory()).await;
    let mut bad_cluster = static_cluster("bad", 8080);
    bad_cluster["connect_timeout"] = "0s".into();
    let mut bad_routes = route_config("routes", &["good"]);
    bad_routes["virtual_hosts"][0]["domains"] = serde_json::json!([]);

    let status = server
        .apply(&[static_cluster("good", 8081), bad_cluster, bad_routes], vec![])
        .await
        .expect_err("invalid config is rejected");

    assert_eq!(status.code(), Code::InvalidArgument);
    let errors = validation_errors(&status);
    assert_eq!(errors.len(), 2, "one error per bad resource: {errors:?}");
    assert!(errors[0].contains("Cluster \"bad\""), "{}", errors[0]);
    assert!(errors[1].contains("RouteConfiguration \"routes\""), "{}", errors[1]);
    assert_eq!(status.message().lines().count(), 2, "message lists one error per line");

    let config = server.config_client().await.get_config(GetConfigRequest::default()).await.expect("get config").into_inner();
    assert_eq!(config.version, "0");
    assert!(config.resources.is_empty(), "the valid cluster was not applied either");
}

#[tokio::test]
async fn dangling_references_are_all_listed() {
    let server = TestServer::start(ControlPlane::in_memory()).await;

    let status = server
        .apply(&[listener("http", 10000, "missing-routes"), route_config("routes", &["missing-cluster"])], vec![])
        .await
        .expect_err("dangling references are rejected");

    assert_eq!(status.code(), Code::InvalidArgument);
    let errors = validation_errors(&status);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|error| error.contains("missing-routes")), "{errors:?}");
    assert!(errors.iter().any(|error| error.contains("missing-cluster")), "{errors:?}");
}

#[tokio::test]
async fn removal_breaking_reference_is_rejected() {
    let server = TestServer::start(ControlPlane::in_memory()).await;
    server.apply(&[static_cluster("web", 8080), route_config("routes", &["web"])], vec![]).await.expect("first apply");

    let status = server.apply(&[], vec![removal(CDS, "web")]).await.expect_err("route still uses the cluster");

    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(server.plane.store().snapshot().version(), 1);
    assert_eq!(server.plane.store().snapshot().len(), 2);
}

#[tokio::test]
async fn bad_removals_and_duplicates_are_rejected() {
    let server = TestServer::start(ControlPlane::in_memory()).await;
    server.apply(&[static_cluster("web", 8080)], vec![]).await.expect("first apply");

    let mut unknown_type = removal(CDS, "web");
    unknown_type.type_url = "type.googleapis.com/envoy.config.core.v3.Secret".to_string();
    let status = server
        .apply(
            &[static_cluster("dup", 1), static_cluster("dup", 2), static_cluster("web", 8080)],
            vec![removal(CDS, "absent"), removal(CDS, "web"), unknown_type],
        )
        .await
        .expect_err("request is rejected");

    let errors = validation_errors(&status);
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors.iter().any(|error| error.contains("\"dup\"") && error.contains("more than once")), "{errors:?}");
    assert!(errors.iter().any(|error| error.contains("\"absent\": it does not exist")), "{errors:?}");
    assert!(errors.iter().any(|error| error.contains("both apply and remove")), "{errors:?}");
    assert!(errors.iter().any(|error| error.contains("Secret")), "{errors:?}");
}

#[tokio::test]
async fn identical_apply_keeps_version_and_pushes_nothing() {
    let server = TestServer::start(ControlPlane::in_memory()).await;
    let config = [static_cluster("web", 8080)];
    server.apply(&config, vec![]).await.expect("first apply");

    let mut proxy = server.ads_client("proxy-1").await;
    proxy.subscribe(CDS, &[]).await;
    let first = proxy.next_of(CDS).await;
    proxy.ack(&first, &[]).await;
    let published = server.plane.store().subscribe();

    let again = server.apply(&config, vec![]).await.expect("identical apply is accepted");

    assert!(!again.changed);
    assert_eq!(again.version, "1");
    assert!(again.added.is_empty());
    assert!(again.modified.is_empty());
    assert!(again.removed.is_empty());
    assert!(!published.has_changed().expect("store alive"), "no snapshot was published");
    proxy.expect_silence().await;
    assert_eq!(server.plane.store().snapshot().version(), 1);
}

#[tokio::test]
async fn unchanged_resources_keep_their_ignored_fields() {
    let server = TestServer::start(ControlPlane::in_memory()).await;
    let mut labelled = static_cluster("web", 8080);
    labelled["alt_stat_name"] = "web_stats".into();
    let first = server.apply(&[labelled.clone(), static_cluster("api", 8081)], vec![]).await.expect("first apply");
    assert_eq!(first.ignored_fields.len(), 1, "{:?}", first.ignored_fields);
    let before = server.plane.store().snapshot();

    let second = server.apply(&[labelled, static_cluster("api", 9090)], vec![]).await.expect("second apply");

    assert_eq!(second.ignored_fields, first.ignored_fields, "an unchanged resource reports what it ignores again");
    let modified: Vec<&str> = second.modified.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(modified, ["api"], "only the changed cluster is modified");
    let stored = server.plane.store().snapshot();
    let api = stored.get(&legate_control_plane::snapshot::ResourceKey::new(CDS, "api")).expect("api is in force");
    assert_eq!(api.version, 2);
    let web = legate_control_plane::snapshot::ResourceKey::new(CDS, "web");
    let (web_before, web_after) = (before.get(&web).expect("web in force"), stored.get(&web).expect("web still in force"));
    assert_eq!(web_after.version, 1, "the unchanged cluster keeps its version");
    assert!(std::ptr::eq(web_before, web_after), "the unchanged cluster is shared with the previous config, not copied");
}
