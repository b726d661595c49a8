//! Label sets of the data plane's metrics.

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerStatPrefixLabels {
    pub listener: String,
    pub stat_prefix: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub listener: String,
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub virtual_host: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteClassLabels {
    pub virtual_host: String,
    pub route: String,
    pub code_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthzResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatPrefixLabels {
    pub stat_prefix: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlagLabels {
    pub flag: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterClassLabels {
    pub cluster: String,
    pub code_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessLogLabels {
    pub log: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthCheckLabels {
    pub cluster: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpgradeResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XdsUpdateLabels {
    pub resource_type: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XdsTypeLabels {
    pub resource_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XdsVersionLabels {
    pub resource_type: &'static str,
    pub version: String,
}

/// Envoy's response flags for requests the proxy ended or answered itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFlag {
    /// NR: no route matched.
    NoRoute,
    /// NC: the route's cluster does not exist.
    NoCluster,
    /// UH: no healthy endpoint.
    NoHealthyUpstream,
    /// UF: the upstream connection failed.
    UpstreamConnectFailure,
    /// UT: the route timeout passed.
    UpstreamTimeout,
    /// SI: the stream idle timeout passed.
    StreamIdleTimeout,
    /// UC: the upstream connection ended before the response.
    UpstreamConnectionTermination,
    /// RT: the connection manager's request timeout passed (Legate's flag;
    /// Envoy logs these without a flag).
    RequestTimeout,
    /// UO: a circuit breaker was full.
    UpstreamOverflow,
    /// URX: the retry limit was reached and the last try's response is
    /// passed on.
    UpstreamRetryLimitExceeded,
    /// DC: the downstream connection ended before the response did.
    DownstreamConnectionTermination,
    /// RL: the local rate limit filter rejected the request.
    RateLimited,
    /// DPE: the downstream sent a malformed request, such as a bad chunked body.
    DownstreamProtocolError,
    /// UAEX: the external authorization service denied the request, or
    /// could not be asked and the filter fails closed.
    UnauthorizedExternalService,
}

impl ResponseFlag {
    pub const fn as_str(self) -> &'static str {
        match self {
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoCluster => "NC",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectFailure => "UF",
            ResponseFlag::UpstreamTimeout => "UT",
            ResponseFlag::StreamIdleTimeout => "SI",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::RequestTimeout => "RT",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::DownstreamConnectionTermination => "DC",
            ResponseFlag::RateLimited => "RL",
            ResponseFlag::DownstreamProtocolError => "DPE",
            ResponseFlag::UnauthorizedExternalService => "UAEX",
        }
    }
}
