//! Access logs of an HTTP connection manager.

use std::sync::Arc;

/// One access log: where lines go, how they read, and which requests log.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLog {
    pub sink: LogSink,
    pub format: LogFormat,
    pub filter: Option<LogFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogSink {
    File(String),
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogFormat {
    /// A line of literals and command operators.
    Text(Arc<[LogToken]>),
    /// A JSON object per line; each key's value is formatted from tokens.
    /// `omit_empty` leaves out keys whose value is empty.
    Json { fields: Arc<[(String, Vec<LogToken>)]>, omit_empty: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogToken {
    Literal(String),
    Operator(LogOperator),
}

/// Envoy's command operators that Legate fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOperator {
    StartTime,
    /// `%REQ(name?fallback):max_length%`, names lowercased; `:path` has
    /// secret query values redacted.
    RequestHeader { name: String, fallback: Option<String>, max_length: Option<usize> },
    ResponseHeader { name: String, fallback: Option<String>, max_length: Option<usize> },
    ResponseCode,
    ResponseFlags,
    Duration,
    BytesReceived,
    BytesSent,
    Protocol,
    UpstreamHost,
    UpstreamCluster,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    RouteName,
}

/// Which requests are logged.
#[derive(Debug, Clone, PartialEq)]
pub enum LogFilter {
    StatusCode { op: Comparison, value: u16 },
    /// Logs this share (0.0 to 1.0) of requests, picked at random.
    Sample(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Equal,
    AtLeast,
    AtMost,
}

/// Envoy's default access log format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";
