//! The config store: validates each change against the whole config, versions
//! it, saves it, then publishes the new snapshot to the ADS streams.

use std::collections::BTreeMap;
use std::sync::Arc;

use legate_api::legate::config::v1::{ResourceRef, StoredConfig};
use legate_config::error::ErrorKind;
use legate_config::resource::decode_any;
use legate_config::{validate, ConfigError, ConfigErrors, ResourceType};
use tokio::sync::{watch, Mutex};

use crate::persist::{PersistError, StateFile};
use crate::snapshot::{ResourceKey, Snapshot, StoredResource};

/// Result of an accepted apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Config version in force after the apply.
    pub version: u64,
    /// False when the request matched the config in force, so no version was
    /// made and nothing was pushed.
    pub changed: bool,
    pub added: Vec<ResourceKey>,
    pub modified: Vec<ResourceKey>,
    pub removed: Vec<ResourceKey>,
    /// Fields that were accepted but change nothing about traffic.
    pub ignored_fields: Vec<String>,
}

/// An apply that changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The request or the config it would produce is invalid; every problem
    /// found is listed.
    #[error("invalid config: {0}")]
    Invalid(ConfigErrors),
    /// The new config could not be saved, so it was not put in force.
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("saving the config stopped before it finished")]
    SaveInterrupted(#[source] tokio::task::JoinError),
}

/// A state file that cannot be put in force at start-up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("state file {path} contains a config that is not valid: {errors}")]
    Invalid { path: String, errors: ConfigErrors },
}

/// The config in force and the only way to change it.
#[derive(Debug)]
pub struct Store {
    published: watch::Sender<Arc<Snapshot>>,
    /// Held for a whole apply, so versions, the state file and published
    /// snapshots all advance in the same order.
    apply_lock: Mutex<()>,
    state_file: Option<StateFile>,
}

/// Changes one request makes to the config in force.
#[derive(Debug, Default)]
struct Changes {
    added: Vec<ResourceKey>,
    modified: Vec<ResourceKey>,
    removed: Vec<ResourceKey>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    fn changed_types(&self) -> impl Iterator<Item = ResourceType> + '_ {
        self.added.iter().chain(&self.modified).chain(&self.removed).map(|key| key.resource_type)
    }
}

/// Resources decoded from one request, keyed by type and name.
#[derive(Debug, Default)]
struct DecodedResources {
    resources: BTreeMap<ResourceKey, StoredResource>,
    ignored_fields: Vec<String>,
}

impl Store {
    /// Creates a store that keeps its config in memory only, starting empty.
    pub fn in_memory() -> Self {
        Self::with_snapshot(Snapshot::default(), None)
    }

    /// Loads the config saved in `state_file`, or starts empty at version 0
    /// when the file does not exist. A file that cannot be read, parsed or
    /// validated is an error: it is never replaced by an empty config.
    pub fn open(state_file: StateFile) -> Result<Self, LoadError> {
        let snapshot = match state_file.load()? {
            Some(stored) => snapshot_from_stored(stored)
                .map_err(|errors| LoadError::Invalid { path: state_file.path().display().to_string(), errors })?,
            None => {
                tracing::info!(path = %state_file.path().display(), "no saved config, starting empty at version 0");
                return Ok(Self::with_snapshot(Snapshot::default(), Some(state_file)));
            }
        };

        tracing::info!(
            path = %state_file.path().display(),
            version = snapshot.version(),
            resources = snapshot.len(),
            "loaded config"
        );
        Ok(Self::with_snapshot(snapshot, Some(state_file)))
    }

    fn with_snapshot(snapshot: Snapshot, state_file: Option<StateFile>) -> Self {
        let (published, _) = watch::channel(Arc::new(snapshot));
        Store { published, apply_lock: Mutex::new(()), state_file }
    }

    /// Returns the snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.borrow().clone()
    }

    /// Returns a receiver of every snapshot published from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.published.subscribe()
    }

    /// Adds or replaces `resources` and deletes `removals` in one atomic
    /// change. Nothing is applied unless the request and the resulting config
    /// are valid and the new config is saved.
    pub async fn apply(&self, resources: &[prost_types::Any], removals: &[ResourceRef]) -> Result<ApplyOutcome, ApplyError> {
        let _guard = self.apply_lock.lock().await;
        let current = self.snapshot();

        let mut errors = Vec::new();
        let decoded = decode_resources(resources, &mut errors);
        let removed = removal_keys(removals, &current, &decoded, &mut errors);

        // References are checked even when some resources failed to decode,
        // so one rejection lists every problem. A resource that failed is
        // absent from the candidate and may show up as a missing reference.
        let changes = classify(&current, &decoded, removed);
        let candidate = build_snapshot(&current, decoded.resources, &changes);
        let reference_errors = validate::snapshot(candidate.entries().values().map(|stored| &stored.resource));
        errors.extend(reference_errors.0);
        if !errors.is_empty() {
            return Err(reject(errors));
        }

        if changes.is_empty() {
            tracing::info!(version = current.version(), "apply matched the config in force");
            return Ok(ApplyOutcome { version: current.version(), ignored_fields: decoded.ignored_fields, ..Default::default() });
        }

        self.save(&candidate).await?;
        let outcome = ApplyOutcome {
            version: candidate.version(),
            changed: true,
            added: changes.added,
            modified: changes.modified,
            removed: changes.removed,
            ignored_fields: decoded.ignored_fields,
        };
        tracing::info!(
            version = outcome.version,
            added = outcome.added.len(),
            modified = outcome.modified.len(),
            removed = outcome.removed.len(),
            "applied config"
        );

        self.published.send_replace(Arc::new(candidate));
        Ok(outcome)
    }

    async fn save(&self, snapshot: &Snapshot) -> Result<(), ApplyError> {
        let Some(state_file) = self.state_file.clone() else {
            return Ok(());
        };

        let stored = snapshot.to_stored_config();
        let saved = tokio::task::spawn_blocking(move || state_file.save(&stored)).await;
        match saved {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::error!(error = %crate::error_chain(&error), "config not applied because it could not be saved");
                Err(error.into())
            }
            Err(error) => Err(ApplyError::SaveInterrupted(error)),
        }
    }
}

fn reject(errors: Vec<ConfigError>) -> ApplyError {
    tracing::info!(errors = errors.len(), "rejected invalid config");
    ApplyError::Invalid(ConfigErrors(errors))
}

/// Decodes every resource, recording all errors rather than stopping at the
/// first, and rejects a type and name that appear twice.
fn decode_resources(resources: &[prost_types::Any], errors: &mut Vec<ConfigError>) -> DecodedResources {
    let mut decoded = DecodedResources::default();
    for any in resources {
        let resource = match decode_any(any) {
            Ok(resource) => resource,
            Err(decode_errors) => {
                errors.extend(decode_errors.0);
                continue;
            }
        };

        let key = ResourceKey::new(resource.value.resource_type(), resource.value.name());
        if decoded.resources.contains_key(&key) {
            errors.push(ConfigError {
                kind: ErrorKind::Duplicate,
                resource: key.to_string(),
                path: String::new(),
                message: "appears more than once in the request".to_string(),
            });
            continue;
        }

        decoded.ignored_fields.extend(resource.ignored);
        let stored = StoredResource { any: any.clone(), resource: resource.value, version: 0 };
        decoded.resources.insert(key, stored);
    }
    decoded
}

fn removal_keys(
    removals: &[ResourceRef],
    current: &Snapshot,
    decoded: &DecodedResources,
    errors: &mut Vec<ConfigError>,
) -> Vec<ResourceKey> {
    let mut keys = Vec::new();
    for removal in removals {
        let Some(resource_type) = ResourceType::from_type_url(&removal.type_url) else {
            errors.push(removal_error(
                ErrorKind::Unsupported,
                format!("cannot remove {:?}: resource type {:?} is not supported by Legate", removal.name, removal.type_url),
            ));
            continue;
        };

        let key = ResourceKey::new(resource_type, removal.name.clone());
        if current.get(&key).is_none() {
            errors.push(removal_error(ErrorKind::UnknownReference, format!("cannot remove {key}: it does not exist")));
        } else if decoded.resources.contains_key(&key) {
            errors.push(removal_error(ErrorKind::Duplicate, format!("cannot both apply and remove {key}")));
        } else if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

fn removal_error(kind: ErrorKind, message: String) -> ConfigError {
    ConfigError { kind, resource: String::new(), path: String::new(), message }
}

/// Sorts the request into added, modified and removed resources. A resource
/// whose bytes match the one in force is not a change.
fn classify(current: &Snapshot, decoded: &DecodedResources, removed: Vec<ResourceKey>) -> Changes {
    let mut changes = Changes { removed, ..Default::default() };
    for (key, resource) in &decoded.resources {
        match current.get(key) {
            None => changes.added.push(key.clone()),
            Some(existing) if !existing.same_bytes(resource) => changes.modified.push(key.clone()),
            Some(_) => {}
        }
    }
    changes
}

/// Builds the config that would be in force after `changes`, at the next
/// version. Unchanged resources keep their version.
fn build_snapshot(current: &Snapshot, mut decoded: BTreeMap<ResourceKey, StoredResource>, changes: &Changes) -> Snapshot {
    let version = current.version() + 1;
    let mut resources = current.entries().clone();
    for key in &changes.removed {
        resources.remove(key);
    }
    for key in changes.added.iter().chain(&changes.modified) {
        if let Some(mut resource) = decoded.remove(key) {
            resource.version = version;
            resources.insert(key.clone(), Arc::new(resource));
        }
    }

    let mut type_versions = current.type_versions().clone();
    for resource_type in changes.changed_types() {
        type_versions.insert(resource_type, version);
    }
    Snapshot::new(version, type_versions, resources)
}

/// Rebuilds a snapshot from the state file, decoding and validating every
/// resource again, because Legate's validation may have become stricter
/// since the file was written.
fn snapshot_from_stored(stored: StoredConfig) -> Result<Snapshot, ConfigErrors> {
    let mut errors = Vec::new();
    let decoded = decode_resources(&stored.resources, &mut errors);
    let type_versions = stored_type_versions(&stored, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }

    let reference_errors = validate::snapshot(decoded.resources.values().map(|stored| &stored.resource));
    if !reference_errors.is_empty() {
        return Err(reference_errors);
    }

    // The file records versions per type only, so each resource gets its
    // type's version: the latest version at which it may have changed.
    let resources = decoded
        .resources
        .into_iter()
        .map(|(key, mut resource)| {
            resource.version = type_versions.get(&key.resource_type).copied().unwrap_or(stored.version);
            (key, Arc::new(resource))
        })
        .collect();
    Ok(Snapshot::new(stored.version, type_versions, resources))
}

fn stored_type_versions(stored: &StoredConfig, errors: &mut Vec<ConfigError>) -> BTreeMap<ResourceType, u64> {
    let mut type_versions = BTreeMap::new();
    for (type_url, version) in &stored.type_versions {
        let problem = match ResourceType::from_type_url(type_url) {
            None => Some(format!("type_versions has unsupported resource type {type_url:?}")),
            Some(_) if *version > stored.version => {
                Some(format!("type_versions[{type_url:?}] is {version}, after the config version {}", stored.version))
            }
            Some(resource_type) => {
                type_versions.insert(resource_type, *version);
                None
            }
        };
        if let Some(message) = problem {
            errors.push(ConfigError { kind: ErrorKind::Invalid, resource: String::new(), path: String::new(), message });
        }
    }
    type_versions
}
