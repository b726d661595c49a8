//! A timer that is always pending, so that request timers register
//! without a system call.
//!
//! When tokio's time driver parks, it notes when its next timer is due.
//! Registering a timer due before that point wakes the driver with an
//! eventfd write, because the park may have to end sooner. The timers a
//! proxy keeps between requests, such as pooled connections' idle timeouts,
//! are due much later than a new request's timeout, so each request paid
//! the write. Measured with `strace -c` and `/proc/PID/io` on the
//! benchmark's configs with h2load at a fixed rate: 0.6 writes per HTTP/1.1
//! request at 1,600 requests per second over 64 connections, and 0.3 per
//! gRPC call at 2,000 calls per second.
//!
//! The anchor fires once per `PERIOD`, so the driver's next planned wake is
//! at most that far away, apart from the moment between a tick and its
//! re-arm. A timer due later, such as a route timeout, then registers
//! without waking anything.

use std::time::Duration;

use tokio::time::MissedTickBehavior;

/// Shorter than the usual route, connect and idle timeouts, long enough
/// that the wake-ups cost nothing measurable.
const PERIOD: Duration = Duration::from_secs(1);

/// Spawns the anchor on the current runtime and returns its handle, which
/// stops it. One per runtime is enough: its worker threads share one time
/// driver.
pub(crate) fn spawn() -> tokio::task::AbortHandle {
    let task = tokio::spawn(async {
        let mut ticks = tokio::time::interval(PERIOD);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
        }
    });
    task.abort_handle()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;

    /// Write system calls made by this thread so far.
    fn thread_writes() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io is readable");
        io.lines()
            .find_map(|line| line.strip_prefix("syscw: "))
            .and_then(|count| count.trim().parse().ok())
            .expect("syscw is listed")
    }

    /// Registers `count` timers of ten seconds while nothing else is
    /// pending, on a fresh current-thread runtime, and returns how many
    /// write system calls that took.
    fn writes_for_timers(count: usize, anchored: bool) -> u64 {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            if anchored {
                super::spawn();
            }
            // Let the driver park once with only the anchor pending.
            tokio::time::sleep(Duration::from_millis(20)).await;

            let before = thread_writes();
            let timers: Vec<_> = (0..count).map(|_| Box::pin(tokio::time::sleep(Duration::from_secs(10)))).collect();
            for mut timer in timers {
                // The first poll registers the timer with the driver.
                assert!(timer.as_mut().now_or_never().is_none());
            }
            thread_writes() - before
        })
    }

    #[test]
    fn timers_register_without_writes() {
        let unanchored = writes_for_timers(50, false);
        let anchored = writes_for_timers(50, true);

        assert!(unanchored >= 25, "without the anchor each timer should wake the driver, saw {unanchored} writes");
        assert!(anchored < 5, "with the anchor timers should register quietly, saw {anchored} writes");
    }
}
