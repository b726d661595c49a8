//! Simulated proxies for scenario 10: state-of-the-world ADS streams that
//! subscribe to every cluster, ACK each response at once, and report when
//! they ACKed which version. Streams share a few HTTP/2 connections.

use std::time::{Duration, Instant};

use anyhow::Context;
use legate_api::envoy::config::core::v3::Node;
use legate_api::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use legate_api::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};

pub const CLUSTER_TYPE_URL: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// An ACK one simulated proxy sent: which proxy, which version, and when.
#[derive(Debug, Clone)]
pub struct Ack {
    pub proxy: usize,
    pub version: String,
    pub at: Instant,
}

/// Streams of the simulated proxies, open until dropped.
pub struct SimulatedProxies {
    pub count: usize,
    acks: mpsc::UnboundedReceiver<anyhow::Result<Ack>>,
    /// Kept so that the connections stay open while the streams run.
    _channels: Vec<Channel>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SimulatedProxies {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

impl SimulatedProxies {
    /// Opens `count` ADS streams to 127.0.0.1:`port`, `per_connection` on
    /// each HTTP/2 connection, each with its own node id.
    pub async fn connect(port: u16, count: usize, per_connection: usize) -> anyhow::Result<SimulatedProxies> {
        let (report, acks) = mpsc::unbounded_channel();
        let mut channels = Vec::new();
        let mut tasks = Vec::with_capacity(count);
        for proxy in 0..count {
            if proxy % per_connection.max(1) == 0 {
                let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?.connect_timeout(Duration::from_secs(5));
                channels.push(endpoint.connect().await.with_context(|| format!("failed to connect to the control plane on port {port}"))?);
            }
            let channel = channels.last().expect("pushed above").clone();
            tasks.push(tokio::spawn(run_stream(channel, proxy, report.clone())));
        }
        Ok(SimulatedProxies { count, acks, _channels: channels, tasks })
    }

    /// Waits until every proxy has ACKed a version other than `previous`
    /// (any version when `None`), and returns the time and version of the
    /// last such ACK.
    pub async fn wait_for_all(&mut self, previous: Option<&str>, timeout: Duration) -> anyhow::Result<(Instant, String)> {
        let mut acked = vec![false; self.count];
        let mut remaining = self.count;
        let mut last: Option<Ack> = None;
        let deadline = tokio::time::Instant::now() + timeout;
        while remaining > 0 {
            let ack = match tokio::time::timeout_at(deadline, self.acks.recv()).await {
                Ok(Some(ack)) => ack?,
                Ok(None) => anyhow::bail!("every simulated proxy stream ended"),
                Err(_) => anyhow::bail!("{remaining} of {} simulated proxies had not ACKed a new version after {timeout:?}", self.count),
            };
            if previous == Some(ack.version.as_str()) || acked[ack.proxy] {
                continue;
            }
            acked[ack.proxy] = true;
            remaining -= 1;
            if last.as_ref().is_none_or(|last| last.at < ack.at) {
                last = Some(ack);
            }
        }
        let last = last.context("no simulated proxy to wait for")?;
        Ok((last.at, last.version))
    }
}

/// Runs one proxy's stream: subscribes to every cluster and ACKs each
/// response, reporting the ACK (or the stream's error) to `report`.
async fn run_stream(channel: Channel, proxy: usize, report: mpsc::UnboundedSender<anyhow::Result<Ack>>) {
    if let Err(error) = ack_responses(channel, proxy, &report).await {
        let _ = report.send(Err(error.context(format!("simulated proxy {proxy}"))));
    }
}

async fn ack_responses(channel: Channel, proxy: usize, report: &mpsc::UnboundedSender<anyhow::Result<Ack>>) -> anyhow::Result<()> {
    let (requests, outgoing) = mpsc::unbounded_channel();
    let node = Node { id: format!("bench-proxy-{proxy}"), cluster: "bench".into(), ..Default::default() };
    requests.send(DiscoveryRequest { node: Some(node), type_url: CLUSTER_TYPE_URL.into(), ..Default::default() })?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let mut responses = client.stream_aggregated_resources(UnboundedReceiverStream::new(outgoing)).await?.into_inner();
    while let Some(response) = responses.message().await? {
        let DiscoveryResponse { version_info, nonce, type_url, .. } = response;
        requests.send(DiscoveryRequest { version_info: version_info.clone(), response_nonce: nonce, type_url, ..Default::default() })?;
        report.send(Ok(Ack { proxy, version: version_info, at: Instant::now() }))?;
    }
    anyhow::bail!("the control plane ended the stream")
}
