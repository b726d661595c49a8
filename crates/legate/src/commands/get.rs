//! `legate get`: prints the config in force as proto3 JSON, in the layout
//! `legate apply -f` reads, so the output can be edited and applied again.

use std::process::ExitCode;

use anyhow::Context;
use legate_api::legate::config::v1::GetConfigRequest;
use legate_control_plane::json::resources_to_json;
use legate_api::legate::config::v1::TargetSelector;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub api: super::api_client::ServerArgs,

    /// With target flags, print the resources applied with exactly that
    /// target instead of the untargeted ones.
    #[command(flatten)]
    pub target: super::apply::TargetArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = args.api.connect().await?;
    let config = client
        .get_config(GetConfigRequest { target: args.target.selector() })
        .await
        .with_context(|| format!("control plane at {} failed to return its config", args.api.server))?
        .into_inner();

    // `version_info` carries the version: `legate apply` accepts and ignores it.
    let text = resources_to_json(&config.version, config.resources).context("failed to print the config as JSON")?;
    print!("{text}");
    if args.target.selector().is_none() {
        for target in &config.targets {
            eprintln!("targeted config is also in force; print it with: legate get {}", target_flags(target));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Renders a target as the `--target-*` flags that select it.
fn target_flags(target: &TargetSelector) -> String {
    let mut flags: Vec<String> = target.node_ids.iter().map(|id| format!("--target-node {id}")).collect();
    flags.extend(target.node_clusters.iter().map(|cluster| format!("--target-cluster {cluster}")));
    let mut metadata: Vec<_> = target.metadata.iter().collect();
    metadata.sort();
    flags.extend(metadata.into_iter().map(|(key, value)| format!("--target-metadata {key}={value}")));
    flags.join(" ")
}
