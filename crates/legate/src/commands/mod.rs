//! One module per subcommand, plus what they share.

pub mod api_client;
pub mod apply;
pub mod control_plane;
pub mod demo;
pub mod get;
pub mod history;
pub mod proxies;
pub mod proxy;
pub mod rollout;
pub mod table;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// Default address of the control plane's gRPC port (config API and ADS).
pub const DEFAULT_SERVER: &str = "127.0.0.1:18000";

/// Exit code of `apply` and `rollback` when the control plane could not take
/// the change for now (etcd unavailable, or replicas racing): the same
/// command may succeed later, unlike a rejected config or a stale
/// `--if-version` (exit code 1).
pub const EXIT_RETRY: u8 = 3;

/// Tells whether a failed change is worth retrying as it is.
pub fn retry_later(code: tonic::Code) -> bool {
    matches!(code, tonic::Code::Unavailable | tonic::Code::Aborted)
}

/// Logs to stderr at `info`, or as `RUST_LOG` sets, and returns the handle
/// that changes the filter at run time.
pub fn init_logging() -> LogFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let colors = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = fmt::layer().with_writer(std::io::stderr).with_ansi(colors).with_target(false);
    tracing_subscriber::registry().with(filter).with(output).init();
    LogFilter(handle)
}

/// The process's log filter, which the proxy's `/logging` endpoint changes.
#[derive(Clone)]
pub struct LogFilter(reload::Handle<EnvFilter, Registry>);

impl legate_proxy::LogLevels for LogFilter {
    fn directives(&self) -> String {
        self.0.with_current(|filter| filter.to_string()).unwrap_or_default()
    }

    fn set_directives(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives).map_err(|error| error.to_string())?;
        self.0.reload(filter).map_err(|error| error.to_string())
    }
}

/// Task polls the current-thread scheduler runs between two polls for I/O
/// events (tokio's default is 61). One I/O poll returns up to 1,024 events,
/// so the worker handles about one batch of events, as an event loop does,
/// before it looks for more. Timers and new connections wait longer only
/// while the run queue stays that long. Against the default, with gRPC unary
/// calls through one worker at saturation: about 6% less CPU per call and
/// 12% more calls per second. CPU per HTTP/1.1 request and per WebSocket
/// echo did not change.
const TASKS_PER_EVENT_POLL: u32 = 1024;

/// Builds the tokio runtime with `threads` workers, or one per core.
///
/// One worker gets tokio's current-thread scheduler, which runs woken tasks
/// in the order they were woken. The multi-thread scheduler runs the task
/// woken last first instead. For a proxy that means a connection's task
/// runs as soon as one request is queued on it, and writes that request
/// alone. In order, all the streams that arrived in one read queue their
/// requests first, and the connection writes them in one system call.
pub fn runtime_for(threads: &Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Some(threads) if *threads <= 1 => {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.event_interval(TASKS_PER_EVENT_POLL);
            builder
        }
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(*threads);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

/// Turns `host:port` into the URI tonic connects to: `https://` with TLS,
/// else `http://`. A URI with a scheme stays as it is.
pub fn server_uri(server: &str, tls: bool) -> String {
    if server.starts_with("http://") || server.starts_with("https://") {
        server.to_string()
    } else if tls {
        format!("https://{server}")
    } else {
        format!("http://{server}")
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
