//! `legate status`: how far a config version has reached the connected
//! proxies. `apply --wait` and `rollback --wait` poll the same summary.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use legate_api::legate::config::v1::{GetRolloutRequest, GetRolloutResponse};

use super::api_client::ApiClient;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config version; defaults to the version in force.
    #[arg(value_name = "VERSION")]
    pub version: Option<String>,

    #[command(flatten)]
    pub api: super::api_client::ServerArgs,
}

/// Time between two rollout checks while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = args.api.connect().await?;
    let rollout = fetch(&mut client, args.version.unwrap_or_default()).await?;
    print!("{}", summary(&rollout));
    Ok(exit_code(&rollout))
}

async fn fetch(client: &mut ApiClient, version: String) -> anyhow::Result<GetRolloutResponse> {
    let response = client.get_rollout(GetRolloutRequest { version: version.clone() }).await;
    Ok(response.with_context(|| format!("failed to read the rollout of version {version:?}"))?.into_inner())
}

/// Waits until no connected proxy is pending on `version`, or `timeout`
/// passes, then prints the rollout summary.
pub async fn wait(client: &mut ApiClient, version: &str, timeout: Duration) -> anyhow::Result<ExitCode> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let rollout = fetch(client, version.to_string()).await?;
        let done = rollout.pending.is_empty();
        if done || tokio::time::Instant::now() >= deadline {
            print!("{}", summary(&rollout));
            if !done {
                eprintln!("timed out after {} s waiting for {} proxies", timeout.as_secs(), rollout.pending.len());
                return Ok(ExitCode::from(2));
            }
            return Ok(exit_code(&rollout));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Fails when any proxy rejected the version.
fn exit_code(rollout: &GetRolloutResponse) -> ExitCode {
    if rollout.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn summary(rollout: &GetRolloutResponse) -> String {
    let mut text = format!(
        "version {}: {} applied, {} rejected, {} pending\n",
        rollout.version,
        rollout.applied.len(),
        rollout.rejected.len(),
        rollout.pending.len()
    );
    for rejection in &rollout.rejected {
        text.push_str(&format!("  {} rejected {}: {}\n", rejection.node_id, short_type(&rejection.type_url), rejection.error));
    }
    if !rollout.pending.is_empty() {
        text.push_str(&format!("  pending: {}\n", rollout.pending.join(", ")));
    }
    text
}

fn short_type(type_url: &str) -> &str {
    legate_config::ResourceType::from_type_url(type_url).map_or(type_url, |resource_type| resource_type.short_name())
}

#[cfg(test)]
mod tests {
    use legate_api::legate::config::v1::ProxyRejection;

    use super::*;

    #[test]
    fn summary_lists_rejections_and_pending() {
        let rollout = GetRolloutResponse {
            version: "7".to_string(),
            applied: vec!["a".to_string()],
            rejected: vec![ProxyRejection {
                node_id: "b".to_string(),
                type_url: legate_config::ResourceType::Cluster.type_url().to_string(),
                error: "bad cluster".to_string(),
            }],
            pending: vec!["c".to_string(), "d".to_string()],
        };
        assert_eq!(summary(&rollout), "version 7: 1 applied, 1 rejected, 2 pending\n  b rejected CDS: bad cluster\n  pending: c, d\n");
        assert_eq!(exit_code(&rollout), ExitCode::from(1));
    }
}
