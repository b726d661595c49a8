//! A description of the machine and its load, printed on the results page.

use std::process::Command;

pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".to_string());
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0);
        let kernel = Command::new("uname")
            .arg("-sr")
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
            .unwrap_or_default();
        Machine { cpu_model, cores, memory_gib: memory_kib / 1024.0 / 1024.0, kernel }
    }
}

/// Reads the 1, 5 and 15 minute load averages from /proc/loadavg.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// CPU time, in clock ticks, that every core spent outside idle and I/O wait,
/// from the first line of /proc/stat.
pub fn machine_busy_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|line| line.starts_with("cpu ")) else { return 0 };
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|value| value.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal; guest time is part of user.
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&index| fields.get(index)).sum()
}

/// CPU time the benchmark did not cause: the whole machine's busy time
/// minus the harness's own, over the run.
pub struct ForeignCpu {
    start_busy: u64,
    start_own: u64,
    started: std::time::Instant,
}

impl ForeignCpu {
    pub fn start() -> ForeignCpu {
        ForeignCpu { start_busy: machine_busy_ticks(), start_own: crate::process::own_cpu_ticks(), started: std::time::Instant::now() }
    }

    /// Share of the machine's CPU capacity, in percent, used by other
    /// processes since `start`. Only correct once every child of the harness
    /// has been waited for, because a child's CPU time reaches the harness's
    /// own count when it is reaped.
    pub fn share_percent(&self, cores: usize) -> f64 {
        let busy = machine_busy_ticks().saturating_sub(self.start_busy);
        let own = crate::process::own_cpu_ticks().saturating_sub(self.start_own);
        let capacity = self.started.elapsed().as_secs_f64() * crate::process::clock_ticks_per_second() * cores.max(1) as f64;
        if capacity <= 0.0 {
            return 0.0;
        }
        busy.saturating_sub(own) as f64 * 100.0 / capacity
    }
}
