//! `legate apply`: sends Envoy resources from a YAML or JSON file, and
//! deletions, to the control plane as one atomic change.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use legate_api::legate::config::v1::{ApplyRequest, ApplyResponse, ResourceRef, TargetSelector};
use legate_config::ResourceType;
use legate_control_plane::api::validation_errors;
use tonic::Code;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// YAML or JSON file with a `resources` list, each entry carrying its
    /// "@type" (the layout `legate get` prints).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    #[command(flatten)]
    pub api: super::api_client::ServerArgs,

    /// Resource to delete in the same change, as TYPE/NAME where TYPE is
    /// cds, eds, lds, rds or sds. Repeat for several.
    #[arg(long = "delete", value_name = "TYPE/NAME", value_parser = parse_removal)]
    pub delete: Vec<ResourceRef>,

    #[command(flatten)]
    pub change: ChangeArgs,

    #[command(flatten)]
    pub target: TargetArgs,
}

/// The proxies a change is for. Without any of these flags it is for all.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// Change the config only for the proxy with this node id. Repeat for several.
    #[arg(long = "target-node", value_name = "NODE_ID")]
    pub nodes: Vec<String>,

    /// Change the config only for proxies in this node cluster. Repeat for several.
    #[arg(long = "target-cluster", value_name = "CLUSTER")]
    pub clusters: Vec<String>,

    /// Change the config only for proxies whose node metadata has KEY set to
    /// VALUE. Repeat to require several.
    #[arg(long = "target-metadata", value_name = "KEY=VALUE", value_parser = parse_metadata)]
    pub metadata: Vec<(String, String)>,
}

impl TargetArgs {
    pub fn selector(&self) -> Option<TargetSelector> {
        if self.nodes.is_empty() && self.clusters.is_empty() && self.metadata.is_empty() {
            return None;
        }
        Some(TargetSelector {
            node_ids: self.nodes.clone(),
            node_clusters: self.clusters.clone(),
            metadata: self.metadata.iter().cloned().collect(),
        })
    }
}

fn parse_metadata(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE, for example track=canary")),
    }
}

/// Flags shared by the commands that change the config.
#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    /// Refuse the change unless VERSION is the version in force, so that a
    /// change made meanwhile by someone else is not overwritten.
    #[arg(long, value_name = "VERSION")]
    pub if_version: Option<String>,

    /// Wait until every connected proxy has applied or rejected the new
    /// version; exit 1 if any rejected it, 2 on timeout.
    #[arg(long)]
    pub wait: bool,

    /// Maximum wait with --wait, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = super::history::DEFAULT_WAIT.as_secs(), requires = "wait")]
    pub wait_timeout: u64,
}

impl ChangeArgs {
    /// Returns the time to wait for proxies, when --wait is set.
    pub fn wait_timeout(&self) -> Option<std::time::Duration> {
        self.wait.then(|| std::time::Duration::from_secs(self.wait_timeout))
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.file.is_none() && args.delete.is_empty() {
        bail!("nothing to apply: give -f FILE, --delete TYPE/NAME, or both");
    }

    let resources = match &args.file {
        Some(file) => match read_resources(file)? {
            Ok(resources) => resources,
            Err(errors) => {
                print_errors(&format!("invalid config in {}:", file.display()), &errors);
                return Ok(ExitCode::from(1));
            }
        },
        None => Vec::new(),
    };

    let mut client = args.api.connect().await?;
    let request = ApplyRequest {
        resources,
        remove: args.delete,
        if_version: args.change.if_version.clone().unwrap_or_default(),
        applied_by: super::api_client::operator(),
        target: args.target.selector(),
    };
    let response = match client.apply(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == Code::InvalidArgument => {
            print_errors("invalid config:", &validation_errors(&status));
            return Ok(ExitCode::from(1));
        }
        Err(status) if status.code() == Code::FailedPrecondition => {
            eprintln!("not applied: {}", status.message());
            return Ok(ExitCode::from(1));
        }
        Err(status) if super::retry_later(status.code()) => {
            eprintln!("not applied, retry later ({:?}): {}", status.code(), status.message());
            return Ok(ExitCode::from(super::EXIT_RETRY));
        }
        Err(status) => bail!("control plane at {} failed the apply ({:?}): {}", args.api.server, status.code(), status.message()),
    };
    print_outcome(&response);
    match args.change.wait_timeout() {
        Some(timeout) => super::rollout::wait(&mut client, &response.version, timeout).await,
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Reads and parses `file`; the inner error lists the parse problems.
fn read_resources(file: &PathBuf) -> anyhow::Result<Result<Vec<prost_types::Any>, Vec<String>>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("failed to read {}", file.display()))?;
    let parsed = legate_config::text::parse_resources(&text)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect());
    Ok(parsed)
}

fn print_errors(heading: &str, errors: &[String]) {
    eprintln!("{heading}");
    for error in errors {
        eprintln!("  {error}");
    }
}

fn print_outcome(response: &ApplyResponse) {
    if response.changed {
        println!(
            "applied version {}: {} added, {} modified, {} removed",
            response.version,
            response.added.len(),
            response.modified.len(),
            response.removed.len()
        );
    } else {
        println!("no change: version {} is already in force", response.version);
    }

    if !response.ignored_fields.is_empty() {
        println!("accepted but ignored, because Legate does not use them:");
        for field in &response.ignored_fields {
            println!("  {field}");
        }
    }
}

/// Parses `--delete TYPE/NAME`.
fn parse_removal(text: &str) -> Result<ResourceRef, String> {
    let (short_type, name) =
        text.split_once('/').ok_or_else(|| format!("{text:?} is not TYPE/NAME, for example cds/backend"))?;
    let resource_type = match short_type.to_ascii_lowercase().as_str() {
        "cds" => ResourceType::Cluster,
        "eds" => ResourceType::ClusterLoadAssignment,
        "lds" => ResourceType::Listener,
        "rds" => ResourceType::RouteConfiguration,
        "sds" => ResourceType::Secret,
        _ => return Err(format!("unknown resource type {short_type:?}; use cds, eds, lds, rds or sds")),
    };
    if name.is_empty() {
        return Err(format!("{text:?} has no resource name after the '/'"));
    }
    Ok(ResourceRef { type_url: resource_type.type_url().to_string(), name: name.to_string() })
}
