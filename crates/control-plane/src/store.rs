//! The config store: validates each change against the whole config, versions
//! it, saves it, then publishes the new snapshot to the ADS streams.
//!
//! It saves to the state file of one control plane, or to etcd, where
//! several replicas share one config. Each replica commits its applies there
//! with a revision check and adopts the versions the others commit.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::SystemTime;

use legate_api::legate::config::v1::{ResourceRef, StoredConfig};
use legate_config::error::ErrorKind;
use legate_config::resource::{decode_any, resource_name};
use legate_config::{validate, ConfigError, ConfigErrors, ResourceType};
use tokio::sync::{watch, Mutex};

use crate::etcd::{Etcd, EtcdError};
use crate::persist::{PersistError, StateFile};
use crate::snapshot::{Origin, ResourceKey, Snapshot, StoredResource};
use crate::targets::{Overlay, Selector};

mod shared;

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

/// Conditions and authorship of one change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Applies only if this is the version in force.
    pub if_version: Option<u64>,
    /// The author of the change, kept in the history.
    pub applied_by: String,
    /// The proxies the change is for. `None` changes the untargeted config.
    pub target: Option<Selector>,
}

/// An apply that changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// `if_version` no longer matches, because another change came first.
    #[error("the config is at version {current}, not {expected}; read it again and retry")]
    VersionConflict { expected: u64, current: u64 },
    /// A rollback to a version the history no longer keeps.
    #[error("version {0} is not in the history; `legate history` lists the kept versions")]
    UnknownVersion(u64),
    /// The request or the config it would produce is invalid; every problem
    /// found is listed.
    #[error("invalid config: {0}")]
    Invalid(ConfigErrors),
    /// The new config could not be saved, so it was not put in force.
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("saving the config stopped before it finished")]
    SaveInterrupted(#[source] tokio::task::JoinError),
    /// etcd did not respond, so the change was not committed and the config
    /// in force is unchanged.
    #[error("etcd is unavailable, so the config was not changed; retry once etcd is back")]
    EtcdUnavailable(#[source] EtcdError),
    /// Other replicas committed a change before each attempt of this one.
    #[error("the config in etcd changed {0} times while this change was being committed; retry")]
    Contended(usize),
}

/// A state file that cannot be put in force at start-up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("state file {path} contains a config that is not valid: {errors}")]
    Invalid { path: String, errors: ConfigErrors },
    #[error("failed to load the config from etcd")]
    Etcd(#[from] EtcdError),
    #[error("etcd key {key} contains a config that is not valid: {errors}")]
    InvalidInEtcd { key: String, errors: ConfigErrors },
}

/// Storage of the config in force and its history.
#[derive(Debug)]
enum Backend {
    Memory,
    File(StateFile),
    /// Shared with other replicas. `revision` is the mod revision of the
    /// config key that holds the snapshot in force; it changes only under
    /// the apply lock.
    Etcd { etcd: Etcd, revision: AtomicI64 },
}

/// Outcome of saving a new version.
enum Saved {
    Done,
    /// Another replica committed first, so the candidate was built on a
    /// stale config.
    Superseded,
}

/// Commits an apply tries before it gives up on a config that other
/// replicas keep changing.
const COMMIT_ATTEMPTS: usize = 5;

/// The config in force and the only way to change it.
#[derive(Debug)]
pub struct Store {
    published: watch::Sender<Arc<Snapshot>>,
    /// Held for a whole apply and for each adoption of a version from
    /// etcd, so versions, the saved config and published snapshots all
    /// advance in the same order.
    apply_lock: Mutex<()>,
    backend: Backend,
    /// The most recent versions, oldest first, the one in force last. They
    /// share the resources that did not change between them.
    history: std::sync::Mutex<VecDeque<Arc<Snapshot>>>,
}

/// Versions the history keeps, in memory and in the data directory.
pub const HISTORY_LIMIT: usize = 50;

/// Changes one request makes to the config in force.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) added: Vec<ResourceKey>,
    pub(crate) modified: Vec<ResourceKey>,
    pub(crate) removed: Vec<ResourceKey>,
}

impl Changes {
    /// Adds `other`'s changes; a key changed in both is listed once.
    fn extend(&mut self, other: Changes) {
        for (list, more) in [(&mut self.added, other.added), (&mut self.modified, other.modified), (&mut self.removed, other.removed)] {
            for key in more {
                if !list.contains(&key) {
                    list.push(key);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    pub(crate) fn changed_types(&self) -> impl Iterator<Item = ResourceType> + '_ {
        self.added.iter().chain(&self.modified).chain(&self.removed).map(|key| key.resource_type)
    }
}

/// The part of the config that one apply changes.
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    /// The untargeted resources; the overlays stay as they are.
    Untargeted,
    /// The overlay of one target.
    Target(&'a Selector),
    /// The untargeted resources, and the overlays set to these, for a rollback.
    Restore(&'a [Overlay]),
}

/// Resources decoded from one request, keyed by type and name.
#[derive(Debug, Default)]
struct DecodedResources {
    resources: BTreeMap<ResourceKey, Arc<StoredResource>>,
    ignored_fields: Vec<String>,
}

impl Store {
    /// Creates a store that keeps its config in memory only, starting empty.
    pub fn in_memory() -> Self {
        let snapshot = Arc::new(Snapshot::default());
        Self::with_backend(snapshot.clone(), VecDeque::from([snapshot]), Backend::Memory)
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
                return Ok(Self::with_state_file(Snapshot::default(), state_file));
            }
        };

        tracing::info!(
            path = %state_file.path().display(),
            version = snapshot.version(),
            resources = snapshot.len(),
            "loaded config"
        );
        Ok(Self::with_state_file(snapshot, state_file))
    }

    fn with_state_file(snapshot: Snapshot, state_file: StateFile) -> Self {
        let snapshot = Arc::new(snapshot);
        let history = history_from(state_file.history().load_all(), &snapshot);
        Self::with_backend(snapshot, history, Backend::File(state_file))
    }

    fn with_backend(snapshot: Arc<Snapshot>, history: VecDeque<Arc<Snapshot>>, backend: Backend) -> Self {
        let (published, _) = watch::channel(snapshot);
        Store { published, apply_lock: Mutex::new(()), backend, history: std::sync::Mutex::new(history) }
    }

    /// Returns the kept versions, newest first.
    pub fn history(&self) -> Vec<Arc<Snapshot>> {
        self.lock_history().iter().rev().cloned().collect()
    }

    /// Returns a kept version.
    pub fn version(&self, version: u64) -> Option<Arc<Snapshot>> {
        self.lock_history().iter().find(|snapshot| snapshot.version() == version).cloned()
    }

    fn lock_history(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Snapshot>>> {
        // Each update is a push or a pop, so a panic cannot leave it half-done.
        self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        self.apply_with(resources, removals, &ApplyOptions::default()).await
    }

    /// Applies as [`Store::apply`] does, on the conditions in `options`.
    pub async fn apply_with(
        &self,
        resources: &[prost_types::Any],
        removals: &[ResourceRef],
        options: &ApplyOptions,
    ) -> Result<ApplyOutcome, ApplyError> {
        let _guard = self.apply_lock.lock().await;
        for _ in 0..COMMIT_ATTEMPTS {
            self.catch_up_locked().await?;
            let origin = Origin { applied_at: SystemTime::now(), applied_by: options.applied_by.clone(), rolled_back_to: None };
            let scope = options.target.as_ref().map_or(Scope::Untargeted, Scope::Target);
            if let Some(outcome) = self.apply_locked(resources, removals, options.if_version, origin, scope).await? {
                return Ok(outcome);
            }
        }
        Err(ApplyError::Contended(COMMIT_ATTEMPTS))
    }

    /// Puts the resources of an earlier kept version back in force as a new
    /// version: resources added since are removed, and changed ones restored.
    /// Targeted overlays are restored the same way.
    pub async fn rollback(&self, version: u64, options: &ApplyOptions) -> Result<ApplyOutcome, ApplyError> {
        let _guard = self.apply_lock.lock().await;
        for _ in 0..COMMIT_ATTEMPTS {
            self.catch_up_locked().await?;
            let target = self.version(version).ok_or(ApplyError::UnknownVersion(version))?;
            let current = self.snapshot();
            let resources = target.packed_in_push_order();
            let removals: Vec<ResourceRef> =
                current.entries().keys().filter(|key| target.get(key).is_none()).map(ResourceKey::to_ref).collect();
            let origin = Origin { applied_at: SystemTime::now(), applied_by: options.applied_by.clone(), rolled_back_to: Some(version) };
            let scope = Scope::Restore(target.overlays());
            if let Some(outcome) = self.apply_locked(&resources, &removals, options.if_version, origin, scope).await? {
                return Ok(outcome);
            }
        }
        Err(ApplyError::Contended(COMMIT_ATTEMPTS))
    }

    /// Applies on top of the snapshot in force. Returns `None` when another
    /// replica committed first, so the caller catches up and tries again.
    async fn apply_locked(
        &self,
        resources: &[prost_types::Any],
        removals: &[ResourceRef],
        if_version: Option<u64>,
        origin: Origin,
        scope: Scope<'_>,
    ) -> Result<Option<ApplyOutcome>, ApplyError> {
        let current = self.snapshot();
        if let Some(expected) = if_version.filter(|expected| *expected != current.version()) {
            return Err(ApplyError::VersionConflict { expected, current: current.version() });
        }

        let mut errors = Vec::new();
        let decoded = decode_resources(resources, Some(&current), &mut errors);

        // References are checked even when some resources failed to decode,
        // so one rejection lists every problem. A resource that failed is
        // absent from the candidate and may show up as a missing reference.
        let (changes, candidate) = match scope {
            Scope::Untargeted => {
                let removed = removal_keys(removals, &current, &decoded, &mut errors);
                let changes = classify(&current, &decoded, removed);
                let candidate = build_snapshot(&current, decoded.resources, &changes).with_overlays(current.overlays().to_vec());
                (changes, candidate)
            }
            Scope::Target(selector) => crate::targets::build_targeted(&current, selector, decoded.resources, removals, &mut errors),
            Scope::Restore(overlays) => {
                let removed = removal_keys(removals, &current, &decoded, &mut errors);
                let mut changes = classify(&current, &decoded, removed);
                let candidate = build_snapshot(&current, decoded.resources, &changes);
                let (overlay_changes, candidate) = crate::targets::restore_overlays(&current, candidate, overlays);
                changes.extend(overlay_changes);
                (changes, candidate)
            }
        };
        let candidate = candidate.with_origin(origin);
        let reference_errors = validate::snapshot(candidate.entries().values().map(|stored| &stored.resource));
        errors.extend(reference_errors.0);
        errors.extend(crate::targets::validate_overlays(&candidate));
        if !errors.is_empty() {
            return Err(reject(errors));
        }

        if changes.is_empty() {
            tracing::info!(version = current.version(), "apply matched the config in force");
            return Ok(Some(ApplyOutcome { version: current.version(), ignored_fields: decoded.ignored_fields, ..Default::default() }));
        }

        // The push waits for the synced save, so a proxy never runs a
        // version that a restarted control plane would not restore.
        if let Saved::Superseded = self.save(&candidate).await? {
            tracing::info!(version = candidate.version(), "another replica committed this version first; retrying on its config");
            return Ok(None);
        }
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

        let candidate = Arc::new(candidate);
        self.remember(candidate.clone());
        self.published.send_replace(candidate);
        Ok(Some(outcome))
    }

    /// Adds a new version to the history, on disk too, and drops the
    /// oldest beyond [`HISTORY_LIMIT`]. The version is already in force, so
    /// a failure to save it only logs a warning.
    fn remember(&self, snapshot: Arc<Snapshot>) {
        let state_file = match &self.backend {
            Backend::File(state_file) => Some(state_file),
            _ => None,
        };
        if let Some(state_file) = state_file {
            let history = state_file.history();
            // A file system without hard links gets its own copy.
            let saved = history.link_state_file(state_file, snapshot.version()).or_else(|error| {
                tracing::debug!(error = %crate::error_chain(&error), "failed to link the state file into the history; writing a copy");
                history.save(&snapshot.to_stored_config())
            });
            if let Err(error) = saved {
                tracing::warn!(error = %crate::error_chain(&error), version = snapshot.version(), "failed to save the version in the history");
            }
        }

        let mut kept = self.lock_history();
        kept.push_back(snapshot);
        while kept.len() > HISTORY_LIMIT {
            kept.pop_front();
        }
        if let (Some(state_file), Some(oldest)) = (state_file, kept.front()) {
            state_file.history().prune(oldest.version());
        }
    }

    async fn save(&self, snapshot: &Snapshot) -> Result<Saved, ApplyError> {
        match &self.backend {
            Backend::Memory => Ok(Saved::Done),
            Backend::File(state_file) => Self::save_to_file(state_file.clone(), snapshot).await.map(|()| Saved::Done),
            Backend::Etcd { etcd, revision } => shared::commit(etcd, revision, snapshot).await,
        }
    }

    async fn save_to_file(state_file: StateFile, snapshot: &Snapshot) -> Result<(), ApplyError> {
        let (stored, resources) = snapshot.to_stored_parts();
        let saved = tokio::task::spawn_blocking(move || state_file.save_parts(&stored, &resources)).await;
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

/// Builds the kept versions from the saved history, up to the one in force,
/// sharing unchanged resources between them. Versions that are no longer
/// valid are skipped. The one in force comes from the state file or the
/// config key, so it is kept even when its history entry is missing.
fn history_from(stored: Vec<StoredConfig>, current: &Arc<Snapshot>) -> VecDeque<Arc<Snapshot>> {
    let mut history: VecDeque<Arc<Snapshot>> = VecDeque::new();
    for config in stored.into_iter().filter(|config| config.version < current.version()) {
        let version = config.version;
        match snapshot_from_stored(config) {
            Ok(snapshot) => history.push_back(Arc::new(share_resources(snapshot, current))),
            Err(errors) => tracing::warn!(version, %errors, "skipping a history version that is no longer valid"),
        }
    }
    history.push_back(current.clone());
    while history.len() > HISTORY_LIMIT {
        history.pop_front();
    }
    history
}

/// Replaces the resources of `snapshot` that have the same bytes in `newer`
/// with `newer`'s copies, so kept versions cost only what changed. The
/// overlays and the target are kept as they are.
fn share_resources(snapshot: Snapshot, newer: &Snapshot) -> Snapshot {
    let origin = snapshot.origin().clone();
    let overlays = snapshot.overlays().to_vec();
    let target = snapshot.target().cloned();
    let resources = snapshot
        .entries()
        .iter()
        .map(|(key, resource)| match newer.entries().get(key) {
            Some(shared) if shared.same_bytes(resource) => (key.clone(), shared.clone()),
            _ => (key.clone(), resource.clone()),
        })
        .collect();
    Snapshot::new(snapshot.version(), snapshot.type_versions().clone(), resources).with_origin(origin).with_overlays(overlays).with_target(target)
}

fn reject(errors: Vec<ConfigError>) -> ApplyError {
    tracing::info!(errors = errors.len(), "rejected invalid config");
    ApplyError::Invalid(ConfigErrors(errors))
}

/// Decodes every resource, recording all errors rather than stopping at the
/// first, and rejects a type and name that appear twice. A resource whose
/// bytes equal those of the same resource in `known` is taken from it
/// instead: a file that changes 1 of 2,000 resources decodes 1.
fn decode_resources(resources: &[prost_types::Any], known: Option<&Snapshot>, errors: &mut Vec<ConfigError>) -> DecodedResources {
    let mut decoded = DecodedResources::default();
    for any in resources {
        let stored = match known.and_then(|snapshot| unchanged(snapshot, any)) {
            Some(stored) => stored,
            None => match decode_any(any) {
                Ok(resource) => Arc::new(StoredResource::new(any.clone(), resource.value).with_ignored(resource.ignored)),
                Err(decode_errors) => {
                    errors.extend(decode_errors.0);
                    continue;
                }
            },
        };

        let key = ResourceKey::new(stored.resource.resource_type(), stored.resource.name());
        if decoded.resources.contains_key(&key) {
            errors.push(ConfigError {
                kind: ErrorKind::Duplicate,
                resource: key.to_string(),
                path: String::new(),
                message: "appears more than once in the request".to_string(),
            });
            continue;
        }

        decoded.ignored_fields.extend(stored.ignored.iter().cloned());
        decoded.resources.insert(key, stored);
    }
    decoded
}

/// Returns the resource in `snapshot` that has exactly the bytes of `any`,
/// if there is one, shared rather than copied.
fn unchanged(snapshot: &Snapshot, any: &prost_types::Any) -> Option<Arc<StoredResource>> {
    // TODO: a client that encodes map entries in a varying order makes an
    // unchanged resource compare as changed. `legate apply` sorts them
    // (reflect::sort_map_entries); doing so here would cost a walk of every
    // resource in every apply.
    // Decoding a listener reads files (JWKS, descriptor sets) that may have
    // changed since, so listeners are always decoded again.
    let resource_type = ResourceType::from_type_url(&any.type_url).filter(|kind| *kind != ResourceType::Listener)?;
    let existing = snapshot.entries().get(&ResourceKey::new(resource_type, resource_name(any)?))?;
    (existing.any.type_url == any.type_url && existing.any.value == any.value).then(|| existing.clone())
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

pub(crate) fn removal_error(kind: ErrorKind, message: String) -> ConfigError {
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
fn build_snapshot(current: &Snapshot, mut decoded: BTreeMap<ResourceKey, Arc<StoredResource>>, changes: &Changes) -> Snapshot {
    let version = current.version() + 1;
    let mut resources = current.entries().clone();
    for key in &changes.removed {
        resources.remove(key);
    }
    for key in changes.added.iter().chain(&changes.modified) {
        if let Some(resource) = decoded.remove(key) {
            resources.insert(key.clone(), at_version(resource, version));
        }
    }

    let mut type_versions = current.type_versions().clone();
    for resource_type in changes.changed_types() {
        type_versions.insert(resource_type, version);
    }
    Snapshot::new(version, type_versions, resources)
}

/// Stamps `resource` with `version`, copying it only when another
/// snapshot shares it.
pub(crate) fn at_version(mut resource: Arc<StoredResource>, version: u64) -> Arc<StoredResource> {
    Arc::make_mut(&mut resource).version = version;
    resource
}

/// Rebuilds a snapshot from the state file, decoding and validating every
/// resource again, because Legate's validation may have become stricter
/// since the file was written.
fn snapshot_from_stored(stored: StoredConfig) -> Result<Snapshot, ConfigErrors> {
    let mut errors = Vec::new();
    let decoded = decode_resources(&stored.resources, None, &mut errors);
    let type_versions = stored_type_versions(&stored, &mut errors);
    let overlays: Vec<Overlay> = stored
        .targeted
        .iter()
        .filter_map(|targeted| {
            let selector = Selector::from_proto(targeted.target.as_ref()?).ok()?;
            let decoded = decode_resources(&targeted.resources, None, &mut errors);
            Some(Overlay { selector, resources: decoded.resources })
        })
        .collect();
    let target = stored.target.as_ref().and_then(|target| Selector::from_proto(target).ok());
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
        .map(|(key, resource)| {
            let version = type_versions.get(&key.resource_type).copied().unwrap_or(stored.version);
            (key, at_version(resource, version))
        })
        .collect();
    let origin = Origin {
        applied_at: stored.applied_at.and_then(|at| SystemTime::try_from(at).ok()).unwrap_or(SystemTime::UNIX_EPOCH),
        applied_by: stored.applied_by,
        rolled_back_to: (stored.rolled_back_to != 0).then_some(stored.rolled_back_to),
    };
    Ok(Snapshot::new(stored.version, type_versions, resources).with_origin(origin).with_overlays(overlays).with_target(target))
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
