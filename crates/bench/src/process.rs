//! Child processes of a run: started pinned to one core with `taskset`,
//! measured through /proc, and stopped by PID.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The core every proxy runs on.
pub const PROXY_CORE: usize = 0;
/// The core the load generators and the echo upstream share.
pub const LOAD_CORE: usize = 1;

/// A process started by the harness, stopped when dropped.
pub struct Pinned {
    name: String,
    child: Child,
}

impl Pinned {
    /// Starts `program` on `core`, with stdout and stderr written to
    /// `log_dir/NAME.log`.
    pub fn spawn(name: &str, core: usize, program: &Path, args: &[String], env: &[(&str, &str)], log_dir: &Path) -> anyhow::Result<Pinned> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = File::create(&log_path).with_context(|| format!("failed to create {}", log_path.display()))?;
        let mut command = Command::new("taskset");
        command.arg("-c").arg(core.to_string()).arg(program).args(args);
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        // taskset execs the program, so the child's PID is the program's.
        let child = command.spawn().with_context(|| format!("failed to start {name} ({})", program.display()))?;
        Ok(Pinned { name: name.to_string(), child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the process has already exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => anyhow::bail!("{} exited early with {status}; see its log in the results folder", self.name),
            None => Ok(()),
        }
    }

    /// Sends SIGTERM to the process (nginx's master then stops its worker),
    /// waits up to 3 s, then sends SIGKILL to it and to every descendant.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let descendants = process_tree(self.pid());
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in descendants.iter().rev() {
            signal(*pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `signal` to `pid`, a process this harness started.
pub fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill takes plain integers; the PID is one this harness started
        // or a child of it.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// `pid` and every process below it, parents before children.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let parents = all_parents();
    let mut tree = vec![pid];
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next];
        tree.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(child, _)| *child));
        next += 1;
    }
    tree
}

fn all_parents() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_fields(pid)?.ppid)))
        .collect()
}

struct StatFields {
    ppid: u32,
    cpu_ticks: u64,
}

/// Reads `/proc/PID/stat`. The command name may hold spaces and brackets,
/// so the fields are counted from the last `)`.
fn stat_fields(pid: u32) -> Option<StatFields> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 of proc(5) is fields[0] here, so ppid (field 4) is fields[1],
    // utime (14) fields[11] and stime (15) fields[12].
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(StatFields { ppid, cpu_ticks: utime + stime })
}

/// User plus system CPU time, in seconds, of `pid` and its descendants.
pub fn cpu_seconds(pid: u32) -> f64 {
    let ticks: u64 = process_tree(pid).into_iter().filter_map(stat_fields).map(|fields| fields.cpu_ticks).sum();
    ticks as f64 / clock_ticks_per_second()
}

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU time, in clock ticks, of the harness and every child it has reaped
/// (utime, stime, cutime and cstime of /proc/self/stat).
pub fn own_cpu_ticks() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/stat") else { return 0 };
    let Some(end) = text.rfind(')') else { return 0 };
    // Fields 14 to 17 of proc(5), counted from field 3 after the command name.
    text[end + 1..].split_whitespace().skip(11).take(4).filter_map(|value| value.parse::<u64>().ok()).sum()
}

/// Busy and total clock ticks of one core, from the `cpuN` line of
/// /proc/stat. Busy is user, nice, system, irq and softirq time. Total adds
/// idle and iowait but not steal, the time the hypervisor gave elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct CoreTicks {
    busy: u64,
    total: u64,
}

impl CoreTicks {
    /// Reads the counters of `core`, or `None` where /proc/stat lacks them.
    pub fn read(core: usize) -> Option<CoreTicks> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let label = format!("cpu{core}");
        let line = text.lines().find(|line| line.split_whitespace().next() == Some(label.as_str()))?;
        let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|value| value.parse().ok()).collect();
        Self::from_fields(&values)
    }

    /// Builds the counters from the numbers of a `cpuN` line, of which it
    /// reads the first seven: user, nice, system, idle, iowait, irq and
    /// softirq. Steal and guest time (already part of user and nice) are left out.
    fn from_fields(values: &[u64]) -> Option<CoreTicks> {
        let [user, nice, system, idle, iowait, irq, softirq]: [u64; 7] = values.get(..7)?.try_into().ok()?;
        let busy = user + nice + system + irq + softirq;
        Some(CoreTicks { busy, total: busy + idle + iowait })
    }

    /// Share of the time between `self` and `later` that the core was busy,
    /// in 0..=1; `None` when no tick passed between the two reads.
    pub fn busy_share_until(&self, later: &CoreTicks) -> Option<f64> {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return None;
        }
        Some(later.busy.saturating_sub(self.busy) as f64 / total as f64)
    }
}

/// Memory of a process tree, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident set sizes added up; pages shared between the processes of
    /// the tree (nginx's master and worker) count once per process.
    pub rss_kib: u64,
    /// Proportional set sizes added up, so a shared page counts once.
    pub pss_kib: u64,
}

/// Reads `/proc/PID/smaps_rollup` of `pid` and each descendant.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let mut total = Memory::default();
    for member in process_tree(pid) {
        let path = format!("/proc/{member}/smaps_rollup");
        let text = std::fs::read_to_string(&path).with_context(|| format!("failed to read {path}"))?;
        total.rss_kib += rollup_field(&text, "Rss:");
        total.pss_kib += rollup_field(&text, "Pss:");
    }
    Ok(total)
}

fn rollup_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Open files limit the harness requests, so its children can hold
/// scenario 7's connections.
pub const OPEN_FILES_LIMIT: u64 = 65_536;

/// Raises this process's RLIMIT_NOFILE to `requested`, or when the hard limit
/// cannot be raised (no CAP_SYS_RESOURCE), the soft limit to the hard one.
/// Children inherit the result, and scenario 7 opens fewer connections when
/// it stays below what they need.
pub fn raise_open_files_limit(requested: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= requested {
            return;
        }
        let raised = libc::rlimit { rlim_cur: requested, rlim_max: requested.max(limit.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return;
        }
        let soft_to_hard = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        libc::setrlimit(libc::RLIMIT_NOFILE, &soft_to_hard);
        eprintln!("could not raise the open files limit to {requested}; it stays at {}", limit.rlim_max);
    }
}

/// Returns this process's soft RLIMIT_NOFILE, which its children inherit.
pub fn open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the one struct passed.
    let result = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if result == 0 {
        limit.rlim_cur
    } else {
        1024
    }
}

/// Runs `work` on a new thread pinned to the load core, for load that the
/// harness generates itself, and returns its result.
pub fn on_load_core<T: Send>(work: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                pin_current_thread(LOAD_CORE)?;
                work()
            })
            .join()
            .unwrap_or_else(|_| anyhow::bail!("the load thread panicked"))
    })
}

fn pin_current_thread(core: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set, CPU_SET writes
    // inside it, and pid 0 names the calling thread.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        anyhow::bail!("failed to pin the load thread to core {core}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Returns a TCP port that was free a moment ago. Another process may take it
/// before the target binds it, and the target then fails to start and logs why.
pub fn free_port() -> anyhow::Result<u16> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").context("failed to find a free port on 127.0.0.1")?;
    Ok(socket.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_busy_share_between_reads() {
        let before = CoreTicks { busy: 50, total: 100 };
        let after = CoreTicks { busy: 80, total: 140 };
        assert_eq!(before.busy_share_until(&after), Some(0.75));
        assert_eq!(after.busy_share_until(&after), None);
    }

    #[test]
    fn core_ticks_leave_out_steal_and_guest() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let ticks = CoreTicks::from_fields(&[10, 1, 5, 70, 4, 2, 3, 50, 6, 0]).expect("a full cpu line");
        assert_eq!(ticks.busy, 21);
        assert_eq!(ticks.total, 95);
        assert!(CoreTicks::from_fields(&[1, 2, 3]).is_none());
    }

    #[test]
    fn core_ticks_read_from_proc() {
        let ticks = CoreTicks::read(0).expect("/proc/stat has a cpu0 line");
        assert!(ticks.total > 0);
        assert!(ticks.busy <= ticks.total);
        assert!(CoreTicks::read(usize::MAX).is_none());
    }

    #[test]
    fn own_stat_is_parsed() {
        let fields = stat_fields(std::process::id()).expect("own /proc/PID/stat");
        assert!(fields.ppid > 0);
    }

    #[test]
    fn rollup_field_reads_kib() {
        let text = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:                4200 kB\nPss:                1300 kB\n";
        assert_eq!(rollup_field(text, "Rss:"), 4200);
        assert_eq!(rollup_field(text, "Pss:"), 1300);
        assert_eq!(rollup_field(text, "Swap:"), 0);
    }
}
