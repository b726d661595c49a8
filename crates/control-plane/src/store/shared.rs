//! The store's side of a config shared through etcd: loading it, committing
//! applies with a revision check, and adopting versions other replicas commit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use legate_api::legate::config::v1::StoredConfig;

use super::{history_from, share_resources, snapshot_from_stored, ApplyError, Backend, LoadError, Saved, Store, HISTORY_LIMIT};
use crate::etcd::{Commit, Etcd, EtcdState};
use crate::snapshot::Snapshot;

impl Store {
    /// Loads the config shared in etcd, or starts empty at version 0 when no
    /// replica applied one yet. An unreachable etcd is an error, because an
    /// empty config served in its place would remove every proxy's config.
    pub async fn open_etcd(etcd: Etcd) -> Result<Self, LoadError> {
        let state = etcd.load().await?;
        let applied_before = state.config.is_some();
        let snapshot = match state.config {
            Some(stored) => {
                snapshot_from_stored(stored).map_err(|errors| LoadError::InvalidInEtcd { key: etcd.config_key(), errors })?
            }
            None => Snapshot::default(),
        };
        tracing::info!(
            etcd.endpoints = etcd.endpoints(),
            key = %etcd.config_key(),
            version = snapshot.version(),
            resources = snapshot.len(),
            "loaded config from etcd"
        );

        let snapshot = Arc::new(snapshot);
        let history = shared_history(state.history, &snapshot, applied_before);
        Ok(Self::with_backend(snapshot, history, Backend::Etcd { etcd, revision: AtomicI64::new(state.config_revision) }))
    }

    /// Returns the etcd client when the config is shared through etcd.
    pub fn etcd(&self) -> Option<&Etcd> {
        match &self.backend {
            Backend::Etcd { etcd, .. } => Some(etcd),
            _ => None,
        }
    }

    /// Reads the config in etcd and adopts it when another replica changed
    /// it, so an apply and its `if_version` check start from the latest
    /// version. Does nothing without etcd.
    pub(super) async fn catch_up_locked(&self) -> Result<(), ApplyError> {
        let Backend::Etcd { etcd, .. } = &self.backend else {
            return Ok(());
        };
        let state = etcd.load().await.map_err(|error| {
            tracing::error!(error = %crate::error_chain(&error), "config not applied because etcd is unavailable");
            ApplyError::EtcdUnavailable(error)
        })?;
        self.adopt_state_locked(state);
        Ok(())
    }

    /// Adopts the config and history read from etcd, under the apply lock.
    /// The watch of each replica calls it on every (re)connect, so versions
    /// committed while it was cut off are neither missed nor missing from
    /// the history.
    pub(crate) async fn adopt_state(&self, state: EtcdState) {
        let _guard = self.apply_lock.lock().await;
        self.adopt_state_locked(state);
    }

    fn adopt_state_locked(&self, state: EtcdState) {
        let Backend::Etcd { revision, .. } = &self.backend else {
            return;
        };
        if state.config_revision == revision.load(Ordering::Acquire) {
            return;
        }
        let applied_before = state.config.is_some();
        if let Some(config) = state.config {
            self.adopt_locked(config, state.config_revision);
        }
        let current = self.snapshot();
        *self.lock_history() = shared_history(state.history, &current, applied_before);
    }

    /// Adopts a version another replica committed at `mod_revision`, which
    /// the watch of the config key reported.
    pub(crate) async fn adopt(&self, config: StoredConfig, mod_revision: i64) {
        let _guard = self.apply_lock.lock().await;
        self.adopt_locked(config, mod_revision);
    }

    /// Publishes `config` unless the snapshot in force is already that
    /// revision or newer, as it is after this replica's own commits.
    fn adopt_locked(&self, config: StoredConfig, mod_revision: i64) {
        let Backend::Etcd { revision, .. } = &self.backend else {
            return;
        };
        if mod_revision <= revision.load(Ordering::Acquire) {
            return;
        }

        let version = config.version;
        let snapshot = match snapshot_from_stored(config) {
            Ok(snapshot) => snapshot,
            Err(errors) => {
                tracing::error!(version, %errors, "config in etcd is not valid for this replica; keeping the config in force");
                return;
            }
        };
        revision.store(mod_revision, Ordering::Release);
        let current = self.snapshot();
        if version == current.version() {
            return;
        }

        // Resources with unchanged bytes keep the copy, and so the version,
        // of the snapshot in force, as they do on the replica that applied.
        let snapshot = Arc::new(share_resources(snapshot, &current));
        tracing::info!(version, previous_version = current.version(), resources = snapshot.len(), "adopted config from etcd");
        self.remember(snapshot.clone());
        self.published.send_replace(snapshot);
    }
}

/// Commits `snapshot` if the config in etcd is still the one in force
/// here, and deletes history versions beyond [`HISTORY_LIMIT`].
pub(super) async fn commit(etcd: &Etcd, revision: &AtomicI64, snapshot: &Snapshot) -> Result<Saved, ApplyError> {
    let oldest_kept = (snapshot.version() + 1).saturating_sub(HISTORY_LIMIT as u64);
    match etcd.commit(&snapshot.to_stored_config(), revision.load(Ordering::Acquire), oldest_kept).await {
        Ok(Commit::Committed { revision: committed }) => {
            revision.store(committed, Ordering::Release);
            Ok(Saved::Done)
        }
        Ok(Commit::Superseded) => Ok(Saved::Superseded),
        Err(error) => {
            tracing::error!(error = %crate::error_chain(&error), "config not applied because etcd is unavailable");
            Err(ApplyError::EtcdUnavailable(error))
        }
    }
}

/// Builds the kept versions of a config shared in etcd. The empty version 0
/// is never committed to etcd, so it is left out before the first apply too,
/// and every replica lists the same versions.
fn shared_history(stored: Vec<StoredConfig>, current: &Arc<Snapshot>, applied_before: bool) -> VecDeque<Arc<Snapshot>> {
    if applied_before {
        history_from(stored, current)
    } else {
        VecDeque::new()
    }
}
