//! The proxy's run state as the admin endpoints show and change it:
//! draining, the health-check override, and a requested shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::watch;

pub struct Lifecycle {
    started: Instant,
    draining: AtomicBool,
    /// Set by `/healthcheck/fail`: `/ready` answers 503 whatever the config.
    health_failed: AtomicBool,
    shutdown: watch::Sender<bool>,
}

impl Lifecycle {
    pub fn new() -> Self {
        Lifecycle {
            started: Instant::now(),
            draining: AtomicBool::new(false),
            health_failed: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
        }
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_health_failed(&self, failed: bool) {
        self.health_failed.store(failed, Ordering::Relaxed);
    }

    pub fn is_health_failed(&self) -> bool {
        self.health_failed.load(Ordering::Relaxed)
    }

    /// Asks the process to shut down, as SIGTERM does.
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once a shutdown is requested.
    pub async fn shutdown_requested(&self) {
        let mut requested = self.shutdown.subscribe();
        let _ = requested.wait_for(|requested| *requested).await;
    }
}
