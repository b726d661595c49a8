//! The etcd client of replicated control planes: reads and commits the config
//! in force and its history under one key prefix, watches the config key, and
//! publishes each replica's proxies under a lease.
//!
//! Keys under the prefix (default `/legate`):
//! - `<prefix>/config`: the version in force, an encoded `StoredConfig`.
//! - `<prefix>/history/<version, 20 digits>`: each kept version, same layout.
//! - `<prefix>/proxies/<replica id>`: the proxies a replica serves, an
//!   encoded `ListProxiesResponse`, deleted by etcd when the lease expires.
//!
//! A commit is one transaction that puts both keys and deletes history
//! beyond the limit, on condition that the config key's mod revision is still
//! the one the replica last read. Of two replicas racing, only one wins.

use std::time::Duration;

use legate_api::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use legate_api::etcdserverpb::kv_client::KvClient;
use legate_api::etcdserverpb::lease_client::LeaseClient;
use legate_api::etcdserverpb::request_op::Request as RequestKind;
use legate_api::etcdserverpb::watch_client::WatchClient;
use legate_api::etcdserverpb::watch_request::RequestUnion;
use legate_api::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use legate_api::legate::config::v1::{ListProxiesResponse, ProxyStatus};
use legate_api::etcdserverpb::response_op::Response as ResponseKind;
use legate_api::legate::config::v1::StoredConfig;
use prost::Message;
use tonic::transport::{Channel, Endpoint};

/// Key prefix used when `--etcd-prefix` is not given.
pub const DEFAULT_PREFIX: &str = "/legate";

/// Time a read or commit may take before etcd counts as unavailable. A
/// stopped etcd accepts connections but never responds, so only a deadline
/// distinguishes it from a slow one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Location of the shared config: the etcd cluster and the key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs of the etcd members, such as `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Prefix of every key the control plane reads and writes.
    pub prefix: String,
}

/// A failed etcd call.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoint given")]
    NoEndpoint,
    #[error("invalid etcd endpoint {endpoint:?}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("etcd request {operation} to {endpoints} failed ({code:?}): {detail}")]
    Request { operation: &'static str, endpoints: String, code: tonic::Code, detail: String },
    #[error("etcd request {operation} to {endpoints} timed out after {} s", REQUEST_TIMEOUT.as_secs())]
    TimedOut { operation: &'static str, endpoints: String },
    #[error("etcd key {key} does not contain a legate.config.v1.StoredConfig")]
    Corrupt {
        key: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("etcd ended the watch of {key}: {reason}")]
    WatchEnded { key: String, reason: String },
    #[error("etcd rejected the lease request: {0}")]
    LeaseRefused(String),
}

/// The config in force and the kept history, read at one etcd revision.
#[derive(Debug, Default)]
pub struct EtcdState {
    /// `None` until the first apply.
    pub config: Option<StoredConfig>,
    /// Mod revision of the config key; 0 when it does not exist.
    pub config_revision: i64,
    /// Kept versions, oldest first.
    pub history: Vec<StoredConfig>,
    /// Revision of the whole store at the read; watches start after it.
    pub revision: i64,
}

/// Result of a conditional commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The new config is in etcd at this mod revision.
    Committed { revision: i64 },
    /// Another replica changed the config first; nothing was written.
    Superseded,
}

/// A client of one etcd cluster and key prefix. Cloning shares the
/// connections.
#[derive(Debug, Clone)]
pub struct Etcd {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
    lease: LeaseClient<Channel>,
    endpoints: String,
    prefix: String,
}

impl Etcd {
    /// Creates a client that connects on first use and reconnects on its
    /// own, so a replica can start its watch loop while etcd is still away.
    pub fn connect(settings: &EtcdSettings) -> Result<Self, EtcdError> {
        if settings.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoint);
        }
        let mut endpoints = Vec::new();
        for url in &settings.endpoints {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|source| EtcdError::InvalidEndpoint { endpoint: url.clone(), source })?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true);
            endpoints.push(endpoint);
        }
        let channel = Channel::balance_list(endpoints.into_iter());
        Ok(Etcd {
            kv: KvClient::new(channel.clone()),
            watch: WatchClient::new(channel.clone()),
            lease: LeaseClient::new(channel),
            endpoints: settings.endpoints.join(","),
            prefix: settings.prefix.trim_end_matches('/').to_string(),
        })
    }

    /// Returns the endpoints, comma-separated, for logs and messages.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Returns the key of the config in force.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    fn history_prefix(&self) -> String {
        format!("{}/history/", self.prefix)
    }

    fn history_key(&self, version: u64) -> String {
        // Zero-padded so that etcd's byte order of keys is version order.
        format!("{}{version:020}", self.history_prefix())
    }

    /// Reads the config in force and every kept version in one transaction,
    /// so both come from the same revision.
    pub async fn load(&self) -> Result<EtcdState, EtcdError> {
        let history_prefix = self.history_prefix();
        let request = TxnRequest {
            compare: Vec::new(),
            success: vec![range_op(self.config_key().into_bytes(), Vec::new()), range_op(history_prefix.clone().into_bytes(), prefix_end(&history_prefix))],
            failure: Vec::new(),
        };
        let response = self.call("Txn", self.kv.clone().txn(request)).await?;
        let revision = response.header.map(|header| header.revision).unwrap_or_default();
        let mut ranges = response.responses.into_iter().filter_map(|op| match op.response {
            Some(ResponseKind::ResponseRange(range)) => Some(range),
            _ => None,
        });
        let config_range = ranges.next().unwrap_or_default();
        let history_range = ranges.next().unwrap_or_default();

        let mut state = EtcdState { revision, ..Default::default() };
        if let Some(config) = config_range.kvs.into_iter().next() {
            state.config_revision = config.mod_revision;
            state.config = Some(self.decode(&config.key, &config.value)?);
        }
        state.history = self.decode_history(history_range);
        Ok(state)
    }

    /// Skips history entries that do not decode, with a warning, because
    /// history is an aid and only the config key decides what is in force.
    fn decode_history(&self, range: RangeResponse) -> Vec<StoredConfig> {
        range
            .kvs
            .into_iter()
            .filter_map(|entry| match self.decode(&entry.key, &entry.value) {
                Ok(config) => Some(config),
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), "skipping an unreadable history entry in etcd");
                    None
                }
            })
            .collect()
    }

    /// Decodes a value read from `key`.
    pub fn decode(&self, key: &[u8], value: &[u8]) -> Result<StoredConfig, EtcdError> {
        StoredConfig::decode(value).map_err(|source| EtcdError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), source })
    }

    /// Puts `config` in force and in the history, and deletes history
    /// versions older than `oldest_kept`, if the config key's mod revision is
    /// still `expected_revision` (0: the key does not exist yet).
    ///
    /// NOTE: a commit that times out may still have been applied by etcd;
    /// the watch then delivers it like a change made by another replica.
    pub async fn commit(&self, config: &StoredConfig, expected_revision: i64, oldest_kept: u64) -> Result<Commit, EtcdError> {
        let config_key = self.config_key().into_bytes();
        let value = config.encode_to_vec();
        let condition = Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: config_key.clone(),
            target_union: Some(TargetUnion::ModRevision(expected_revision)),
        };
        let prune = DeleteRangeRequest { key: self.history_prefix().into_bytes(), range_end: self.history_key(oldest_kept).into_bytes() };
        let request = TxnRequest {
            compare: vec![condition],
            success: vec![
                put_op(config_key, value.clone()),
                put_op(self.history_key(config.version).into_bytes(), value),
                RequestOp { request: Some(RequestKind::RequestDeleteRange(prune)) },
            ],
            failure: Vec::new(),
        };

        let response = self.call("Txn", self.kv.clone().txn(request)).await?;
        if !response.succeeded {
            return Ok(Commit::Superseded);
        }
        // Every operation of a transaction shares the revision in its header.
        Ok(Commit::Committed { revision: response.header.map(|header| header.revision).unwrap_or_default() })
    }

    /// Opens a watch of the config key reporting changes from `start_revision`
    /// on. The request stream stays open, because closing it would end the
    /// watch.
    pub async fn watch_config(&self, start_revision: i64) -> Result<tonic::Streaming<WatchResponse>, EtcdError> {
        let create = WatchCreateRequest { key: self.config_key().into_bytes(), range_end: Vec::new(), start_revision };
        let request = WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) };
        let requests = tokio_stream::StreamExt::chain(tokio_stream::once(request), tokio_stream::pending());
        self.call("Watch", self.watch.clone().watch(requests)).await
    }

    fn presence_prefix(&self) -> String {
        format!("{}/proxies/", self.prefix)
    }

    /// Returns the key under which `replica` publishes its proxies.
    pub fn presence_key(&self, replica: &str) -> String {
        format!("{}{replica}", self.presence_prefix())
    }

    /// Creates a lease that etcd ends `ttl_seconds` after its last renewal,
    /// deleting the keys put under it.
    pub async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64, EtcdError> {
        let response = self.call("LeaseGrant", self.lease.clone().lease_grant(LeaseGrantRequest { ttl: ttl_seconds, id: 0 })).await?;
        if !response.error.is_empty() {
            return Err(EtcdError::LeaseRefused(response.error));
        }
        Ok(response.id)
    }

    /// Renews `lease`. Returns false when it had already expired, so its
    /// keys are gone and a new lease is needed.
    pub async fn renew_lease(&self, lease: i64) -> Result<bool, EtcdError> {
        // One request per stream: etcd responds to it, then closes the
        // stream once the request stream ends.
        let requests = tokio_stream::once(LeaseKeepAliveRequest { id: lease });
        let mut responses = self.call("LeaseKeepAlive", self.lease.clone().lease_keep_alive(requests)).await?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, responses.message()).await;
        match answer {
            Ok(Ok(Some(response))) => Ok(response.ttl > 0),
            Ok(Ok(None)) => Ok(false),
            Ok(Err(status)) => Err(self.request_error("LeaseKeepAlive", &status)),
            Err(_) => Err(EtcdError::TimedOut { operation: "LeaseKeepAlive", endpoints: self.endpoints.clone() }),
        }
    }

    /// Ends `lease` now, so etcd deletes the keys put under it.
    pub async fn revoke_lease(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("LeaseRevoke", self.lease.clone().lease_revoke(LeaseRevokeRequest { id: lease })).await.map(|_| ())
    }

    /// Puts the proxies `replica` serves under `lease`.
    pub async fn publish_proxies(&self, replica: &str, proxies: &ListProxiesResponse, lease: i64) -> Result<(), EtcdError> {
        let put = PutRequest { key: self.presence_key(replica).into_bytes(), value: proxies.encode_to_vec(), lease };
        let request = TxnRequest { compare: Vec::new(), success: vec![RequestOp { request: Some(RequestKind::RequestPut(put)) }], failure: Vec::new() };
        self.call("Txn", self.kv.clone().txn(request)).await.map(|_| ())
    }

    /// Reads the proxies every replica published, sorted by replica id.
    /// A value that does not decode is skipped with a warning.
    pub async fn published_proxies(&self) -> Result<Vec<ProxyStatus>, EtcdError> {
        let prefix = self.presence_prefix();
        let request = RangeRequest { key: prefix.clone().into_bytes(), range_end: prefix_end(&prefix), ..Default::default() };
        let response = self.call("Range", self.kv.clone().range(request)).await?;
        let mut proxies = Vec::new();
        for entry in response.kvs {
            match ListProxiesResponse::decode(entry.value.as_slice()) {
                Ok(published) => proxies.extend(published.proxies),
                Err(error) => {
                    let key = String::from_utf8_lossy(&entry.key);
                    tracing::warn!(%key, %error, "skipping an unreadable proxy list in etcd");
                }
            }
        }
        Ok(proxies)
    }

    fn request_error(&self, operation: &'static str, status: &tonic::Status) -> EtcdError {
        EtcdError::Request { operation, endpoints: self.endpoints.clone(), code: status.code(), detail: status_detail(status) }
    }

    /// Runs one request under [`REQUEST_TIMEOUT`].
    async fn call<T>(
        &self,
        operation: &'static str,
        request: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, EtcdError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.request_error(operation, &status)),
            Err(_) => Err(EtcdError::TimedOut { operation, endpoints: self.endpoints.clone() }),
        }
    }
}

/// Formats a failed call as its message and root cause, such as `tcp
/// connect error: Connection refused (os error 111)`, without the
/// wrappers between them.
fn status_detail(status: &tonic::Status) -> String {
    let mut root = std::error::Error::source(status);
    while let Some(next) = root.and_then(std::error::Error::source) {
        root = Some(next);
    }
    match root {
        Some(cause) if !status.message().contains(&cause.to_string()) => format!("{}: {cause}", status.message()),
        _ => status.message().to_string(),
    }
}

fn range_op(key: Vec<u8>, range_end: Vec<u8>) -> RequestOp {
    RequestOp { request: Some(RequestKind::RequestRange(RangeRequest { key, range_end, ..Default::default() })) }
}

fn put_op(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp { request: Some(RequestKind::RequestPut(PutRequest { key, value, lease: 0 })) }
}

/// Returns the end of the range of every key starting with `prefix`: the
/// prefix with its last byte incremented. Prefixes here end in `/`, so no
/// byte overflows.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(prefix: &str) -> Etcd {
        let settings = EtcdSettings { endpoints: vec!["http://127.0.0.1:2379".to_string()], prefix: prefix.to_string() };
        Etcd::connect(&settings).expect("valid endpoint")
    }

    #[tokio::test]
    async fn keys_sort_in_version_order() {
        let etcd = client("/legate/");
        assert_eq!(etcd.config_key(), "/legate/config");
        assert_eq!(etcd.history_key(7), "/legate/history/00000000000000000007");
        assert!(etcd.history_key(9) < etcd.history_key(10));
        assert_eq!(prefix_end("/legate/history/"), b"/legate/history0".to_vec());
    }

    #[tokio::test]
    async fn connect_rejects_no_endpoint() {
        let settings = EtcdSettings { endpoints: Vec::new(), prefix: DEFAULT_PREFIX.to_string() };
        assert!(matches!(Etcd::connect(&settings), Err(EtcdError::NoEndpoint)));
    }
}
