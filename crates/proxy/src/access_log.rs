//! Access logs: one line per request, formatted from Envoy's command
//! operators and written off the request path. A request hands its line to
//! a writer task through a bounded queue; when the queue is full the line is
//! dropped and counted, so a slow disk never stalls traffic.
//!
//! Only headers a format names are logged. Values of query parameters and
//! headers that look like secrets (`token`, `key`, `secret`, `password`,
//! `auth`, `signature` in the name) are replaced by `REDACTED`, so an API
//! key or bearer token never reaches a log file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, Uri, Version};
use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracing::warn;

use legate_config::model::{AccessLog, Comparison, LogFilter, LogFormat, LogOperator, LogSink, LogToken};

use crate::stats::ResponseFlag;

/// Lines a writer queues before it drops new ones.
const QUEUE: usize = 8192;

/// The access logs of one connection manager, built at config time.
pub struct AccessLoggers {
    logs: Vec<(AccessLog, LogWriter)>,
}

/// The writer of one sink, shared by every log that writes there.
#[derive(Clone)]
pub struct LogWriter {
    lines: mpsc::Sender<String>,
    dropped: Counter,
}

/// Writers by sink, so two logs to one file share one writer.
#[derive(Default)]
pub struct LogWriters {
    writers: Mutex<HashMap<LogSink, LogWriter>>,
}

impl LogWriters {
    fn writer(&self, sink: &LogSink, dropped: Counter) -> LogWriter {
        let mut writers = self.writers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        writers
            .entry(sink.clone())
            .or_insert_with(|| {
                let (lines, queued) = mpsc::channel(QUEUE);
                tokio::spawn(write_lines(sink.clone(), queued));
                LogWriter { lines, dropped }
            })
            .clone()
    }
}

impl AccessLoggers {
    pub fn new(logs: &[AccessLog], writers: &LogWriters, stats: &crate::stats::ProxyStats) -> Self {
        let logs = logs
            .iter()
            .map(|log| {
                let name = match &log.sink {
                    LogSink::File(path) => path.as_str(),
                    LogSink::Stdout => "stdout",
                    LogSink::Stderr => "stderr",
                };
                (log.clone(), writers.writer(&log.sink, stats.access_log_dropped(name)))
            })
            .collect();
        AccessLoggers { logs }
    }

    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }
}

/// What a request's log line needs from the request, kept from its start.
pub struct RequestRecord {
    started: SystemTime,
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    remote: SocketAddr,
    route: Option<Arc<str>>,
    received: Arc<AtomicU64>,
}

/// What forwarding learned about the upstream, carried in the response's
/// extensions.
#[derive(Clone)]
pub struct UpstreamInfo {
    pub host: SocketAddr,
    pub cluster: Arc<str>,
}

impl RequestRecord {
    pub fn new(parts: &http::request::Parts, remote: SocketAddr, route: Option<&str>) -> Self {
        RequestRecord {
            started: SystemTime::now(),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            remote,
            route: route.map(Arc::from),
            received: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Returns the counter the request body adds its bytes to.
    pub fn received_counter(&self) -> Arc<AtomicU64> {
        self.received.clone()
    }
}

/// A request's record with its response, ready to log when the body ends.
pub struct PendingLog {
    pub loggers: Arc<AccessLoggers>,
    pub request: RequestRecord,
    pub status: u16,
    pub response_headers: HeaderMap,
    pub flag: Option<ResponseFlag>,
    pub upstream: Option<UpstreamInfo>,
}

impl PendingLog {
    /// Formats and queues the line of every log whose filter admits it.
    pub fn finish(self, duration: Duration, sent: u64) {
        let done = Finished { pending: &self, duration, sent };
        for (log, writer) in &self.loggers.logs {
            if !admits(log.filter.as_ref(), self.status) {
                continue;
            }
            let line = done.render(&log.format);
            if writer.lines.try_send(line).is_err() {
                writer.dropped.inc();
            }
        }
    }
}

fn admits(filter: Option<&LogFilter>, status: u16) -> bool {
    match filter {
        None => true,
        Some(LogFilter::StatusCode { op: Comparison::Equal, value }) => status == *value,
        Some(LogFilter::StatusCode { op: Comparison::AtLeast, value }) => status >= *value,
        Some(LogFilter::StatusCode { op: Comparison::AtMost, value }) => status <= *value,
        Some(LogFilter::Sample(share)) => fastrand::f64() < *share,
    }
}

struct Finished<'a> {
    pending: &'a PendingLog,
    duration: Duration,
    sent: u64,
}

impl Finished<'_> {
    fn render(&self, format: &LogFormat) -> String {
        match format {
            LogFormat::Text(tokens) => {
                let mut line = String::with_capacity(256);
                for token in tokens.iter() {
                    self.render_token(token, &mut line);
                }
                if !line.ends_with('\n') {
                    line.push('\n');
                }
                line
            }
            LogFormat::Json { fields, omit_empty } => {
                let mut object = serde_json::Map::new();
                for (key, tokens) in fields.iter() {
                    let mut value = String::new();
                    for token in tokens {
                        self.render_token(token, &mut value);
                    }
                    if *omit_empty && (value.is_empty() || value == "-") {
                        continue;
                    }
                    object.insert(key.clone(), serde_json::Value::String(value));
                }
                let mut line = serde_json::Value::Object(object).to_string();
                line.push('\n');
                line
            }
        }
    }

    fn render_token(&self, token: &LogToken, out: &mut String) {
        match token {
            LogToken::Literal(text) => out.push_str(text),
            LogToken::Operator(operator) => self.render_operator(operator, out),
        }
    }

    fn render_operator(&self, operator: &LogOperator, out: &mut String) {
        let request = &self.pending.request;
        match operator {
            LogOperator::StartTime => write_rfc3339(request.started, out),
            LogOperator::RequestHeader { name, fallback, max_length } => {
                let value = request_value(request, name).or_else(|| fallback.as_deref().and_then(|f| request_value(request, f)));
                push_limited(value.as_deref(), *max_length, out);
            }
            LogOperator::ResponseHeader { name, fallback, max_length } => {
                let headers = &self.pending.response_headers;
                let value = header_text(headers, name).or_else(|| fallback.as_deref().and_then(|f| header_text(headers, f)));
                push_limited(value.as_deref(), *max_length, out);
            }
            LogOperator::ResponseCode => {
                let _ = write!(out, "{}", self.pending.status);
            }
            LogOperator::ResponseFlags => out.push_str(self.pending.flag.map_or("-", ResponseFlag::as_str)),
            LogOperator::Duration => {
                let _ = write!(out, "{}", self.duration.as_millis());
            }
            LogOperator::BytesReceived => {
                let _ = write!(out, "{}", request.received.load(Ordering::Relaxed));
            }
            LogOperator::BytesSent => {
                let _ = write!(out, "{}", self.sent);
            }
            LogOperator::Protocol => out.push_str(match request.version {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            }),
            LogOperator::UpstreamHost => match &self.pending.upstream {
                Some(upstream) => {
                    let _ = write!(out, "{}", upstream.host);
                }
                None => out.push('-'),
            },
            LogOperator::UpstreamCluster => out.push_str(self.pending.upstream.as_ref().map_or("-", |u| &u.cluster)),
            LogOperator::DownstreamRemoteAddress => {
                let _ = write!(out, "{}", request.remote);
            }
            LogOperator::DownstreamRemoteAddressWithoutPort => {
                let _ = write!(out, "{}", request.remote.ip());
            }
            LogOperator::RouteName => out.push_str(request.route.as_deref().unwrap_or("-")),
        }
    }
}

/// Reads a request header or pseudo-header; paths have secrets redacted.
fn request_value(request: &RequestRecord, name: &str) -> Option<String> {
    match name {
        ":method" => Some(request.method.to_string()),
        ":path" => request.uri.path_and_query().map(|path| redact_query(path.as_str())),
        ":authority" => request
            .uri
            .authority()
            .map(|authority| authority.to_string())
            .or_else(|| header_text(&request.headers, "host")),
        ":scheme" => Some(request.uri.scheme_str().unwrap_or("http").to_string()),
        "x-envoy-original-path" => header_text(&request.headers, name).map(|path| redact_query(&path)),
        "cookie" => header_text(&request.headers, name).map(|cookies| redact_cookies(&cookies)),
        _ if is_secret_name(name) => request.headers.contains_key(name).then(|| "REDACTED".to_string()),
        _ => header_text(&request.headers, name),
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn push_limited(value: Option<&str>, max_length: Option<usize>, out: &mut String) {
    match value {
        Some(value) => match max_length {
            Some(max) => out.extend(value.chars().take(max)),
            None => out.push_str(value),
        },
        None => out.push('-'),
    }
}

/// Replaces the values of query parameters whose names look like secrets.
pub fn redact_query(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}=REDACTED"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", parameters.join("&"))
}

/// Replaces the values of cookies whose names look like secrets.
fn redact_cookies(cookies: &str) -> String {
    let pairs: Vec<String> = cookies
        .split(';')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name.trim()) => format!("{}=REDACTED", name.trim()),
            _ => pair.trim().to_string(),
        })
        .collect();
    pairs.join("; ")
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "key", "secret", "password", "passwd", "auth", "signature", "sig", "credential"].iter().any(|word| name.contains(word))
}

/// Writes a time as `2026-12-04T20:01:02.345Z`, as Envoy's default
/// `%START_TIME%` does.
fn write_rfc3339(time: SystemTime, out: &mut String) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let days = (seconds / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    let second_of_day = seconds % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        (second_of_day / 60) % 60,
        second_of_day % 60,
        since.subsec_millis()
    );
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

async fn write_lines(sink: LogSink, mut lines: mpsc::Receiver<String>) {
    let mut output: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match &sink {
        LogSink::Stdout => Box::new(tokio::io::stdout()),
        LogSink::Stderr => Box::new(tokio::io::stderr()),
        LogSink::File(path) => match tokio::fs::OpenOptions::new().create(true).append(true).open(path).await {
            Ok(file) => Box::new(file),
            Err(error) => {
                warn!(path, %error, "failed to open access log; its lines are dropped");
                while lines.recv().await.is_some() {}
                return;
            }
        },
    };
    let mut output = tokio::io::BufWriter::new(&mut output);
    while let Some(line) = lines.recv().await {
        let mut failed = output.write_all(line.as_bytes()).await.is_err();
        while let Ok(line) = lines.try_recv() {
            failed |= output.write_all(line.as_bytes()).await.is_err();
        }
        failed |= output.flush().await.is_err();
        if failed {
            warn!(sink = ?sink, "failed to write access log lines");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_cookie_values_are_redacted() {
        assert_eq!(redact_cookies("theme=dark; api_key=s3cr3t;session_token=abc"), "theme=dark; api_key=REDACTED; session_token=REDACTED");
    }

    #[test]
    fn secret_query_values_are_redacted() {
        assert_eq!(redact_query("/a?token=abc&page=2&api_key=xyz"), "/a?token=REDACTED&page=2&api_key=REDACTED");
        assert_eq!(redact_query("/plain"), "/plain");
    }

    #[test]
    fn start_time_is_rfc3339() {
        let mut text = String::new();
        write_rfc3339(UNIX_EPOCH + Duration::from_millis(1_764_878_462_345), &mut text);
        assert_eq!(text, "2025-12-04T20:01:02.345Z");
    }
}
