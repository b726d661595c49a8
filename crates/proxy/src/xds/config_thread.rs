//! The thread that decodes and applies discovery responses.
//!
//! Updates run on their own thread, at a lower scheduling priority than the
//! workers. Where the two share a core, a worker that wakes for traffic
//! takes the core from the update at once, instead of waiting for the
//! update's time slice to end. When the workers leave no idle time, the
//! update still gets a share of the core, so it finishes later but does not
//! stall.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::OnceLock;

use tokio::sync::oneshot;
use tracing::warn;

/// Nice value of the config thread (0 is the default, 19 the lowest
/// priority). At 10 the thread weighs about a tenth of a worker when both
/// want the core.
const CONFIG_THREAD_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Sender to the config thread, or `None` when the thread could not start.
static CONFIG_THREAD: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();

/// Runs `work` on the config thread, inside the caller's runtime (applying
/// binds listeners and spawns tasks), and waits for its output. A panic in
/// `work` resumes on the caller. Where the thread could not start, `work`
/// runs on tokio's blocking pool instead.
pub(super) async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let Some(jobs) = CONFIG_THREAD.get_or_init(start) else {
        return on_blocking_pool(work).await;
    };

    let runtime = tokio::runtime::Handle::current();
    let (done, output) = oneshot::channel::<Result<T, Box<dyn Any + Send>>>();
    let job: Job = Box::new(move || {
        let _runtime = runtime.enter();
        let _ = done.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
    });
    if let Err(mpsc::SendError(job)) = jobs.send(job) {
        // The thread is gone, so the blocking pool runs the job, which still
        // sends its output.
        drop(tokio::task::spawn_blocking(job));
    }

    match output.await {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => unreachable!("every job runs and sends its output, panic or not"),
    }
}

fn start() -> Option<mpsc::Sender<Job>> {
    let (jobs, receiver) = mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new().name("legate-config".into()).spawn(move || {
        lower_priority();
        for job in receiver {
            job();
        }
    });
    match spawned {
        Ok(_) => Some(jobs),
        Err(error) => {
            warn!(%error, "failed to start the config thread, so config updates run on the blocking pool");
            None
        }
    }
}

async fn on_blocking_pool<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(output) => output,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Adds `CONFIG_THREAD_NICE` to the calling thread's nice value. Lowering
/// priority needs no privilege. Where it fails anyway, the thread keeps the
/// process's priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions, and getpriority and
        // setpriority with PRIO_PROCESS and a thread id read and change only
        // that thread.
        let result = unsafe {
            let thread_id = libc::gettid() as libc::id_t;
            let nice = libc::getpriority(libc::PRIO_PROCESS, thread_id);
            libc::setpriority(libc::PRIO_PROCESS, thread_id, (nice + CONFIG_THREAD_NICE).min(19))
        };
        if result != 0 {
            warn!(error = %std::io::Error::last_os_error(), "failed to lower the config thread's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_uses_thread_and_runtime() {
        let (name, spawned) = run(|| {
            let name = std::thread::current().name().map(str::to_string);
            (name, tokio::spawn(async { 5 }))
        })
        .await;

        assert_eq!(name.as_deref(), Some("legate-config"));
        assert_eq!(spawned.await.unwrap(), 5);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn thread_has_lower_priority() {
        // SAFETY: getpriority with PRIO_PROCESS and 0 reads the calling thread's nice value.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };

        let caller = nice();
        let config = run(nice).await;

        assert_eq!(config, (caller + CONFIG_THREAD_NICE).min(19));
    }

    #[tokio::test]
    async fn panic_resumes_on_caller() {
        let panicked = tokio::spawn(run(|| -> u8 { panic!("bad update") })).await;

        assert!(panicked.unwrap_err().is_panic());
        assert_eq!(run(|| 7).await, 7, "the thread takes jobs after a panic");
    }
}
