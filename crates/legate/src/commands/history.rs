//! `legate history` lists the kept config versions; `legate rollback`
//! puts an earlier one back in force as a new version.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use legate_api::legate::config::v1::{HistoryEntry, ListHistoryRequest, RollbackRequest};
use legate_control_plane::targets::Selector;
use tonic::Code;

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub api: super::api_client::ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The earlier version to restore (see `legate history`).
    #[arg(value_name = "VERSION")]
    pub version: String,

    #[command(flatten)]
    pub change: super::apply::ChangeArgs,

    #[command(flatten)]
    pub api: super::api_client::ServerArgs,
}

pub async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.api.connect().await?;
    let response = client.list_history(ListHistoryRequest {}).await;
    let versions = response.with_context(|| format!("control plane at {} failed to list the history", args.api.server))?.into_inner().versions;
    print!("{}", render(&versions));
    Ok(ExitCode::SUCCESS)
}

pub async fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.api.connect().await?;
    let request = RollbackRequest {
        version: args.version.clone(),
        applied_by: super::api_client::operator(),
        if_version: args.change.if_version.clone().unwrap_or_default(),
    };
    let response = match client.rollback(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if matches!(status.code(), Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument) => {
            bail!("rollback to version {} rejected: {}", args.version, status.message())
        }
        Err(status) if super::retry_later(status.code()) => {
            eprintln!("not rolled back, retry later ({:?}): {}", status.code(), status.message());
            return Ok(ExitCode::from(super::EXIT_RETRY));
        }
        Err(status) => bail!("control plane at {} failed the rollback ({:?}): {}", args.api.server, status.code(), status.message()),
    };
    if response.changed {
        println!("version {} restores version {}", response.version, args.version);
    } else {
        println!("no change: version {} already matches version {}", response.version, args.version);
    }
    match args.change.wait_timeout() {
        Some(timeout) => super::rollout::wait(&mut client, &response.version, timeout).await,
        None => Ok(ExitCode::SUCCESS),
    }
}

fn render(versions: &[HistoryEntry]) -> String {
    let mut rows = vec![["VERSION", "APPLIED", "BY", "RESOURCES", "NOTE"].map(String::from).to_vec()];
    rows.extend(versions.iter().map(|entry| {
        let applied = entry.applied_at.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".to_string());
        let by = if entry.applied_by.is_empty() { "-".to_string() } else { entry.applied_by.clone() };
        let target = entry.target.as_ref().and_then(|target| Selector::from_proto(target).ok());
        let note = match (entry.rolled_back_to.as_str(), target) {
            ("", None) => String::new(),
            ("", Some(target)) => format!("target {target}"),
            (version, _) => format!("rollback to {version}"),
        };
        vec![entry.version.clone(), applied, by, entry.resources.to_string(), note]
    }));
    super::table::render(&rows)
}

/// Default maximum wait of the `--wait` flag.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_table_marks_rollbacks() {
        let entry = |version: &str, by: &str, rolled_back_to: &str| HistoryEntry {
            version: version.to_string(),
            applied_at: None,
            applied_by: by.to_string(),
            resources: 3,
            rolled_back_to: rolled_back_to.to_string(),
            target: None,
        };
        let table = render(&[entry("3", "ana@host", "1"), entry("2", "", "")]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("VERSION"));
        assert!(lines[1].starts_with("3 "), "{table}");
        assert!(lines[1].contains("ana@host"), "{table}");
        assert!(lines[1].ends_with("rollback to 1"), "{table}");
        assert!(lines[2].starts_with("2 "), "{table}");
        assert!(lines[2].contains(" - "), "an unknown author shows as -: {table}");
    }
}
