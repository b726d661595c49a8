//! `legate get`: prints the config in force as proto3 JSON, in the layout
//! `legate apply -f` reads, so the output can be edited and applied again.

use std::process::ExitCode;

use anyhow::Context;
use legate_api::legate::config::v1::GetConfigRequest;
use legate_control_plane::json::resources_to_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub api: super::api_client::ServerArgs,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = args.api.connect().await?;
    let config = client
        .get_config(GetConfigRequest {})
        .await
        .with_context(|| format!("control plane at {} failed to return its config", args.api.server))?
        .into_inner();

    // `version_info` carries the version: `legate apply` accepts and ignores it.
    let text = resources_to_json(&config.version, config.resources).context("failed to print the config as JSON")?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
