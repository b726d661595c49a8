//! `legate proxies`: a table of the proxies connected to the control plane,
//! the replica serving each one, and the version of each resource type they
//! accepted or rejected.

use std::process::ExitCode;

use anyhow::Context;
use legate_api::legate::config::v1::{ListProxiesRequest, ProxyStatus, TypeStatus};
use legate_config::ResourceType;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub api: super::api_client::ServerArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = args.api.connect().await?;
    let proxies = client
        .list_proxies(ListProxiesRequest {})
        .await
        .with_context(|| format!("control plane at {} failed to list proxies", args.api.server))?
        .into_inner()
        .proxies;

    if proxies.is_empty() {
        println!("no proxies connected");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render_table(&proxies));
    print!("{}", render_rejections(&proxies));
    Ok(ExitCode::SUCCESS)
}

fn render_table(proxies: &[ProxyStatus]) -> String {
    let mut rows = vec![header()];
    rows.extend(proxies.iter().map(row));
    super::table::render(&rows)
}

fn header() -> Vec<String> {
    let mut header: Vec<String> = ["NODE", "CLUSTER", "REPLICA", "ADDRESS", "CONNECTED", "LAST SEEN"].map(String::from).to_vec();
    header.extend(ResourceType::ALL.iter().map(|resource_type| resource_type.short_name().to_string()));
    header
}

fn row(proxy: &ProxyStatus) -> Vec<String> {
    let connected = proxy.connected_at.as_ref().map(ToString::to_string).unwrap_or_default();
    let last_seen = proxy.last_seen.as_ref().map(ToString::to_string).unwrap_or_default();
    let mut row = vec![
        proxy.node_id.clone(),
        proxy.node_cluster.clone(),
        proxy.replica.clone(),
        proxy.peer_address.clone(),
        connected,
        last_seen,
    ];
    row.extend(ResourceType::ALL.iter().map(|resource_type| type_cell(type_status(proxy, *resource_type))));
    row
}

fn type_status(proxy: &ProxyStatus, resource_type: ResourceType) -> Option<&TypeStatus> {
    proxy.types.iter().find(|status| status.type_url == resource_type.type_url())
}

/// Formats one type's state: `-` when never sent, `NACK vN` when the latest
/// version sent was rejected, otherwise the accepted version, marked while a
/// newer one has no ACK yet.
fn type_cell(status: Option<&TypeStatus>) -> String {
    let Some(status) = status else {
        return "-".to_string();
    };
    if latest_was_rejected(status) {
        return format!("NACK v{}", status.nacked_version);
    }

    match (status.acked_version.as_str(), status.sent_version.as_str()) {
        ("", sent) => format!("sent v{sent}"),
        (acked, sent) if acked == sent => format!("v{acked}"),
        (acked, sent) => format!("v{acked} (sent v{sent})"),
    }
}

fn latest_was_rejected(status: &TypeStatus) -> bool {
    !status.nack_error.is_empty() && status.nacked_version == status.sent_version
}

/// Lists the error of each rejection shown in the table, one per line,
/// because errors are too long for a cell.
fn render_rejections(proxies: &[ProxyStatus]) -> String {
    let mut text = String::new();
    for proxy in proxies {
        for resource_type in ResourceType::ALL {
            let Some(status) = type_status(proxy, resource_type).filter(|status| latest_was_rejected(status)) else {
                continue;
            };
            text.push_str(&format!(
                "\n{} rejected {} v{}: {}\n",
                proxy.node_id,
                resource_type.short_name(),
                status.nacked_version,
                status.nack_error
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(sent: &str, acked: &str, nacked: &str, error: &str) -> TypeStatus {
        TypeStatus {
            type_url: ResourceType::Cluster.type_url().to_string(),
            sent_version: sent.to_string(),
            acked_version: acked.to_string(),
            nacked_version: nacked.to_string(),
            nack_error: error.to_string(),
        }
    }

    #[test]
    fn type_cell_shows_state_of_latest_version() {
        assert_eq!(type_cell(None), "-");
        assert_eq!(type_cell(Some(&status("3", "3", "", ""))), "v3");
        assert_eq!(type_cell(Some(&status("4", "3", "", ""))), "v3 (sent v4)");
        assert_eq!(type_cell(Some(&status("4", "", "", ""))), "sent v4");
        assert_eq!(type_cell(Some(&status("4", "3", "4", "bad"))), "NACK v4");
        assert_eq!(type_cell(Some(&status("5", "5", "4", "bad"))), "v5", "an older rejection is superseded");
    }

    #[test]
    fn table_lists_rejection_errors_below() {
        let proxy = ProxyStatus {
            node_id: "edge-1".to_string(),
            node_cluster: "edge".to_string(),
            replica: "cp-0".to_string(),
            peer_address: "127.0.0.1:5000".to_string(),
            connected_at: None,
            last_seen: None,
            types: vec![status("2", "1", "2", "cluster \"web\": unsupported field")],
            ..Default::default()
        };

        let table = render_table(std::slice::from_ref(&proxy));
        let rejections = render_rejections(&[proxy]);

        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NODE"), "{table}");
        assert!(lines[1].contains("edge-1"), "{table}");
        assert!(lines[0].contains("REPLICA"), "{table}");
        assert!(lines[1].contains("cp-0"), "{table}");
        assert!(lines[1].contains("NACK v2"), "{table}");
        assert_eq!(rejections.trim(), "edge-1 rejected CDS v2: cluster \"web\": unsupported field");
    }
}
