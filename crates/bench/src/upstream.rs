//! The echo upstream every target forwards to: a hyper HTTP/1.1 server that
//! returns the request body, or a fixed payload when the body is empty, and
//! counts the connections it accepts.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::process::{self, Pinned};

#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Port for the traffic under test, on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Port that answers every connection with the count of connections
    /// accepted on `--port`, then closes it.
    #[arg(long)]
    stats_port: u16,
    /// Size of the payload returned for a request without a body, in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
}

/// Runs the echo upstream on one thread until the process is stopped.
pub fn serve(args: EchoArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let data = TcpListener::bind(("127.0.0.1", args.port)).await?;
        let stats = TcpListener::bind(("127.0.0.1", args.stats_port)).await?;
        let accepted = Arc::new(AtomicU64::new(0));
        let payload = Bytes::from(vec![b'x'; args.body_bytes]);
        tokio::spawn(serve_stats(stats, accepted.clone()));
        loop {
            let (stream, _) = data.accept().await?;
            accepted.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let payload = payload.clone();
            let service = service_fn(move |request| echo(request, payload.clone()));
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

async fn echo(request: Request<Incoming>, payload: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body = if body.is_empty() { payload } else { body };
    Ok(Response::new(Full::new(body)))
}

async fn serve_stats(socket: TcpListener, accepted: Arc<AtomicU64>) -> std::io::Result<()> {
    loop {
        let (mut stream, _) = socket.accept().await?;
        let count = accepted.load(Ordering::Relaxed).to_string();
        let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{count}", count.len());
        let _ = stream.write_all(response.as_bytes()).await;
    }
}

/// A running upstream process of the harness's own binary, pinned to the
/// load generators' core: the gRPC or the WebSocket upstream.
pub struct UpstreamProcess {
    _process: Pinned,
    pub port: u16,
}

impl UpstreamProcess {
    /// Starts `legate-bench SUBCOMMAND --port=PORT ARGS...` and waits until it listens.
    pub fn start(subcommand: &str, args: &[String], log_dir: &Path) -> anyhow::Result<UpstreamProcess> {
        let port = process::free_port()?;
        let exe = std::env::current_exe()?;
        let mut all_args = vec![subcommand.to_string(), format!("--port={port}")];
        all_args.extend_from_slice(args);
        let mut process = Pinned::spawn(subcommand, process::LOAD_CORE, &exe, &all_args, &[], log_dir)?;
        process::wait_for_port(port, Duration::from_secs(5))?;
        process.ensure_running()?;
        Ok(UpstreamProcess { _process: process, port })
    }
}

/// A running echo upstream process.
pub struct EchoUpstream {
    _process: Pinned,
    pub port: u16,
    stats_port: u16,
}

impl EchoUpstream {
    /// Starts the harness's own binary as the echo upstream, pinned to the
    /// load generators' core.
    pub fn start(body_bytes: usize, log_dir: &Path) -> anyhow::Result<EchoUpstream> {
        let port = process::free_port()?;
        let stats_port = process::free_port()?;
        let exe = std::env::current_exe()?;
        let args = [
            "echo-upstream".to_string(),
            format!("--port={port}"),
            format!("--stats-port={stats_port}"),
            format!("--body-bytes={body_bytes}"),
        ];
        let mut process = Pinned::spawn("echo-upstream", process::LOAD_CORE, &exe, &args, &[], log_dir)?;
        process::wait_for_port(stats_port, Duration::from_secs(5))?;
        process.ensure_running()?;
        Ok(EchoUpstream { _process: process, port, stats_port })
    }

    /// Connections accepted on the data port since the upstream started.
    pub fn accepted_connections(&self) -> anyhow::Result<u64> {
        let response = crate::http_client::read_once(self.stats_port)?;
        Ok(response.trim().parse()?)
    }
}
