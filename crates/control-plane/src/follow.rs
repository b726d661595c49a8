//! The watch that keeps a replica on the config in etcd: it adopts every
//! version another replica commits, and after a lost connection it reads the
//! latest config and history again before it watches from there.

use std::sync::Arc;
use std::time::Duration;

use legate_api::mvccpb::event::EventType;
use prometheus_client::metrics::gauge::Gauge;

use crate::etcd::{Etcd, EtcdError};
use crate::store::Store;

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Follows the config in etcd until the task is aborted, with `watching`
/// at 1 while the watch is up. While etcd is away the replica keeps serving
/// the snapshot in force, and it retries with a backoff of at most
/// [`MAX_BACKOFF`].
pub(crate) async fn follow(store: Arc<Store>, etcd: Etcd, watching: Gauge) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let error = watch_once(&store, &etcd, &mut backoff, &watching).await;
        watching.set(0);
        tracing::warn!(
            error = %crate::error_chain(&error),
            etcd.endpoints = etcd.endpoints(),
            retry_in_ms = backoff.as_millis() as u64,
            "etcd watch failed; serving the config in force until etcd is back"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Catches up with etcd, then adopts each change until the watch fails.
/// Resets `backoff` once etcd responded.
async fn watch_once(store: &Store, etcd: &Etcd, backoff: &mut Duration, watching: &Gauge) -> EtcdError {
    let state = match etcd.load().await {
        Ok(state) => state,
        Err(error) => return error,
    };
    let start_revision = state.revision + 1;
    store.adopt_state(state).await;

    let mut responses = match etcd.watch_config(start_revision).await {
        Ok(responses) => responses,
        Err(error) => return error,
    };
    *backoff = MIN_BACKOFF;
    watching.set(1);
    tracing::info!(etcd.endpoints = etcd.endpoints(), start_revision, version = store.snapshot().version(), "watching the config in etcd");

    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return EtcdError::WatchEnded { key: etcd.config_key(), reason: "the stream closed".to_string() },
            Err(status) => return EtcdError::WatchEnded { key: etcd.config_key(), reason: status.message().to_string() },
        };
        if response.canceled {
            let reason = format!("{} (compacted at revision {})", response.cancel_reason, response.compact_revision);
            return EtcdError::WatchEnded { key: etcd.config_key(), reason };
        }

        for event in response.events {
            let Some(kv) = event.kv.filter(|_| event.r#type == EventType::Put as i32) else {
                continue;
            };
            match etcd.decode(&kv.key, &kv.value) {
                Ok(config) => store.adopt(config, kv.mod_revision).await,
                Err(error) => tracing::error!(error = %crate::error_chain(&error), "skipping an unreadable config in etcd"),
            }
        }
    }
}
