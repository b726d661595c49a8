//! `legate demo`: the whole system on loopback in one command. It starts
//! demo upstreams, then a control plane and a proxy as separate processes,
//! applies a built-in config through the config API, and prints requests to
//! try.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use legate_api::legate::config::v1::config_service_client::ConfigServiceClient;
use legate_api::legate::config::v1::ApplyRequest;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port of the proxy's HTTP listener on 127.0.0.1.
    #[arg(long, default_value_t = 10000)]
    pub port: u16,
    /// Port of the proxy's admin listener on 127.0.0.1.
    #[arg(long, default_value_t = 9901)]
    pub admin_port: u16,
    /// Folder for the control plane's state and the proxy's bootstrap;
    /// defaults to a new temporary folder.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// The demo's route table and clusters; the `{...}` fields are filled in
/// with the addresses the demo upstreams and listener bind.
const DEMO_CONFIG: &str = include_str!("demo_config.yaml");

const DEMO_BOOTSTRAP: &str = include_str!("demo_bootstrap.yaml");

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let temporary = args.data_dir.is_none();
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("legate-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data_dir).with_context(|| format!("failed to create {}", data_dir.display()))?;

    let web = [start_upstream("web-1").await?, start_upstream("web-2").await?, start_upstream("web-3").await?];
    let api = start_upstream("api-1").await?;

    let tokens = Tokens::create(&data_dir)?;
    let executable = std::env::current_exe().context("failed to find the legate executable")?;
    let (mut control_plane, server) = spawn_control_plane(&executable, &data_dir, &tokens).await?;

    let config = DEMO_CONFIG
        .replace("{listener_port}", &args.port.to_string())
        .replace("{web_1}", &web[0].port().to_string())
        .replace("{web_2}", &web[1].port().to_string())
        .replace("{web_3}", &web[2].port().to_string())
        .replace("{api_1}", &api.port().to_string());
    let version = apply(server, &config, &tokens).await?;
    println!("applied the demo config as version {version}");

    let bootstrap = DEMO_BOOTSTRAP
        .replace("{admin_port}", &args.admin_port.to_string())
        .replace("{ads_port}", &server.port().to_string());
    let bootstrap_path = data_dir.join("bootstrap.yaml");
    std::fs::write(&bootstrap_path, bootstrap).with_context(|| format!("failed to write {}", bootstrap_path.display()))?;
    let mut proxy = spawn_proxy(&executable, &bootstrap_path, &tokens)?;

    print_instructions(&args, server, &tokens);
    super::shutdown_signal().await;

    let _ = proxy.kill().await;
    let _ = control_plane.kill().await;
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    Ok(ExitCode::SUCCESS)
}

/// The bearer tokens of the demo's config API and ADS, new for each run and
/// kept in files only the current user can read.
struct Tokens {
    api_file: PathBuf,
    api: String,
    ads_file: PathBuf,
}

impl Tokens {
    fn create(data_dir: &Path) -> anyhow::Result<Tokens> {
        let api = random_token()?;
        let api_file = data_dir.join("api-token");
        write_private(&api_file, &api)?;
        let ads_file = data_dir.join("ads-token");
        write_private(&ads_file, &random_token()?)?;
        Ok(Tokens { api_file, api, ads_file })
    }
}

/// Returns 24 bytes from the kernel's random source, as hex.
fn random_token() -> anyhow::Result<String> {
    use std::io::Read;

    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut source| source.read_exact(&mut bytes))
        .context("failed to read /dev/urandom for the demo tokens")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("failed to write {}", path.display()))
}

fn print_instructions(args: &Args, server: SocketAddr, tokens: &Tokens) {
    let port = args.port;
    println!();
    println!("Legate demo is running. Try:");
    println!("  curl http://127.0.0.1:{port}/            # round robin over web-1, web-2, web-3");
    println!("  curl http://127.0.0.1:{port}/api/users   # routed to api-1 with /api rewritten to /");
    println!("  curl --http2-prior-knowledge http://127.0.0.1:{port}/");
    println!("  curl http://127.0.0.1:{}/config_dump      # proxy admin", args.admin_port);
    println!("  legate get --server {server} --token-file {}", tokens.api_file.display());
    println!("  legate proxies --server {server} --token-file {}", tokens.api_file.display());
    println!("Press Ctrl-C to stop.");
}

async fn spawn_control_plane(executable: &Path, data_dir: &Path, tokens: &Tokens) -> anyhow::Result<(Child, SocketAddr)> {
    let mut child = Command::new(executable)
        .args(["control-plane", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.join("control-plane"))
        .arg("--api-token-file")
        .arg(&tokens.api_file)
        .arg("--ads-token-file")
        .arg(&tokens.ads_file)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("failed to start the control plane")?;

    let stdout = child.stdout.take().context("control plane has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("control plane did not start within 10 seconds")??
        .context("control plane exited before it was listening")?;
    let address = line
        .rsplit(' ')
        .next()
        .and_then(|text| text.parse::<SocketAddr>().ok())
        .with_context(|| format!("unexpected control plane output {line:?}"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, address))
}

fn spawn_proxy(executable: &Path, bootstrap: &Path, tokens: &Tokens) -> anyhow::Result<Child> {
    Command::new(executable)
        .args(["proxy", "--config"])
        .arg(bootstrap)
        .arg("--ads-token-file")
        .arg(&tokens.ads_file)
        .kill_on_drop(true)
        .spawn()
        .context("failed to start the proxy")
}

async fn apply(server: SocketAddr, config: &str, tokens: &Tokens) -> anyhow::Result<String> {
    let resources = legate_config::text::parse_resources(config)
        .map_err(|errors| anyhow::anyhow!("demo config is invalid: {errors}"))?;
    let mut client = ConfigServiceClient::connect(format!("http://{server}")).await.context("failed to reach the control plane")?;
    let request = ApplyRequest { resources, applied_by: "legate demo".to_string(), ..Default::default() };
    let mut request = tonic::Request::new(request);
    let token = format!("Bearer {}", tokens.api).parse().context("the demo token is not valid header text")?;
    request.metadata_mut().insert("authorization", token);
    let response = client.apply(request).await;
    match response {
        Ok(response) => Ok(response.into_inner().version),
        Err(status) => bail!("control plane rejected the demo config: {}", status.message()),
    }
}

/// Starts an HTTP server on 127.0.0.1 that answers every request with its
/// name, the method and the path it received.
async fn start_upstream(name: &'static str) -> anyhow::Result<SocketAddr> {
    let socket = TcpListener::bind("127.0.0.1:0").await.context("failed to bind a demo upstream")?;
    let address = socket.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| async move {
                    let text = format!("{name} answered {} {}\n", request.method(), request.uri().path());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}
