//! Scenario 10: control plane fan-out. Simulated proxies hold
//! state-of-the-world ADS streams to `legate control-plane`; one change
//! goes out, and the time runs until every stream has ACKed it. The control
//! plane's memory per connected proxy comes from its RSS before and after
//! the streams open.

use std::time::{Duration, Instant};

use super::http1::summarize;
use super::Scenario;
use crate::ads_client::SimulatedProxies;
use crate::bench::Bench;
use crate::control_plane::{ControlPlane, Resources};
use crate::peers::Target;
use crate::process;
use crate::report::metric::{format_value, Better, Metric};
use crate::report::{Goal, Section, Table};

pub struct FanOut;

pub const NUMBER: u8 = 10;
/// Maximum time until every one of `GOAL_STREAMS` streams ACKed a change.
const ACK_GOAL: Duration = Duration::from_secs(1);
const GOAL_STREAMS: usize = 1000;
/// ADS streams per HTTP/2 connection of the simulated proxies.
const STREAMS_PER_CONNECTION: usize = 100;
/// Time the control plane gets to settle before its memory is read.
const SETTLE: Duration = Duration::from_millis(1000);
/// Maximum wait for every stream to ACK the first or the changed config.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// One run with `streams` simulated proxies.
struct FanOutRun {
    streams: usize,
    all_acked: Duration,
    rss_before_kib: u64,
    rss_after_kib: u64,
}

impl FanOutRun {
    fn kib_per_proxy(&self) -> f64 {
        (self.rss_after_kib as f64 - self.rss_before_kib as f64) / self.streams as f64
    }
}

impl Scenario for FanOut {
    fn number(&self) -> u8 {
        NUMBER
    }

    fn title(&self) -> &'static str {
        "Control plane fan-out: one change to 1,000 and 5,000 ADS streams"
    }

    fn run(&self, bench: &mut Bench) -> anyhow::Result<Section> {
        let counts = bench.settings.fan_out_streams.clone();
        let mut runs = Vec::new();
        for &streams in &counts {
            for round in 0..bench.settings.runs {
                let run = measure(bench, streams, round)?;
                eprintln!(
                    "  round {round} {streams:>5} streams: all ACKed {:.1} ms after the apply started; RSS {} -> {} KiB, {:.1} KiB per proxy",
                    run.all_acked.as_secs_f64() * 1e3,
                    run.rss_before_kib,
                    run.rss_after_kib,
                    run.kib_per_proxy()
                );
                runs.push(run);
            }
        }

        let mut section = Section::new(
            self,
            format!(
                "`legate control-plane` runs on the proxy core with one listener, one route configuration and one \
                 cluster. The harness opens N state-of-the-world ADS streams ({STREAMS_PER_CONNECTION} per HTTP/2 \
                 connection, each with its own node id), each subscribing to every cluster and ACKing each response \
                 at once, on the load core. Once every stream has ACKed the first config, `legate apply` adds a \
                 cluster; the time runs from starting `legate apply` until the last stream ACKed the new version. \
                 Memory per proxy is the control plane's RSS with the streams open minus its RSS before they \
                 opened (after {SETTLE:?} each), divided by N."
            ),
        );
        let mut table = Table {
            caption: "Time until every stream ACKed one change, and control plane memory per connected proxy".into(),
            headers: ["streams", "all ACKed median (ms)", "min", "max", "RSS per proxy median (KiB)", "min", "max"].map(String::from).to_vec(),
            rows: Vec::new(),
        };
        for &streams in &counts {
            let of_count: Vec<&FanOutRun> = runs.iter().filter(|run| run.streams == streams).collect();
            let acked = summarize(&of_count, |run| run.all_acked.as_secs_f64() * 1e3);
            let memory = summarize(&of_count, |run| run.kib_per_proxy());
            let cells = |summary: Option<crate::stats::Summary>| -> [String; 3] {
                summary.map_or(["-".into(), "-".into(), "-".into()], |s| [format_value(s.median), format_value(s.min), format_value(s.max)])
            };
            let mut row = vec![streams.to_string()];
            row.extend(cells(acked));
            row.extend(cells(memory));
            table.rows.push(row);
        }
        section.tables.push(table);
        section.goals.push(ack_goal(&runs));
        let mut memory = Metric::new("Control plane RSS per connected proxy", "KiB", Better::Lower);
        memory.insert(Target::Legate, summarize(&runs, FanOutRun::kib_per_proxy));
        let per_proxy = memory.median(Target::Legate);
        section.goals.push(Goal {
            goal: "control plane memory per connected proxy reported".into(),
            measured: per_proxy.map_or("-".to_string(), |kib| format!("{} KiB per proxy (median over every run)", format_value(kib))),
            met: per_proxy.is_some(),
        });
        Ok(section)
    }
}

fn ack_goal(runs: &[FanOutRun]) -> Goal {
    let of_goal_count: Vec<&FanOutRun> = runs.iter().filter(|run| run.streams == GOAL_STREAMS).collect();
    let median_ms = summarize(&of_goal_count, |run| run.all_acked.as_secs_f64() * 1e3).map(|summary| summary.median);
    Goal {
        goal: format!("{GOAL_STREAMS} streams all ACKed a change within {} ms", ACK_GOAL.as_millis()),
        measured: median_ms.map_or("-".to_string(), |ms| format!("{} ms", format_value(ms))),
        met: median_ms.is_some_and(|ms| ms <= ACK_GOAL.as_secs_f64() * 1e3),
    }
}

/// Starts a control plane, connects `streams` simulated proxies, and times
/// one change until all of them ACKed it.
fn measure(bench: &Bench, streams: usize, round: usize) -> anyhow::Result<FanOutRun> {
    let dir = bench.work_dir.join(format!("fan-out/{streams}-{round}"));
    let control_plane = ControlPlane::start(&bench.legate_bin, &dir)?;
    // No proxy forwards anything here, so the ports only need to be valid.
    let base = Resources {
        listen_port: process::free_port()?,
        upstream_port: process::free_port()?,
        scale: 0,
        route_timeout_seconds: 15,
        catch_all_prefix: "/",
    };
    control_plane.apply(&control_plane.write_resources("resources-base.yaml", &base)?)?;
    let changed = control_plane.write_resources("resources-changed.yaml", &Resources { scale: 1, ..base })?;
    std::thread::sleep(SETTLE);
    let pid = control_plane.process.pid();
    let rss_before_kib = process::memory(pid)?.rss_kib;

    process::on_load_core(|| {
        // One worker thread for the streams, so that block_on may wait for
        // `legate apply` without stalling them.
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        runtime.block_on(async {
            let mut proxies = SimulatedProxies::connect(control_plane.port, streams, STREAMS_PER_CONNECTION).await?;
            let (_, first_version) = proxies.wait_for_all(None, ACK_TIMEOUT).await?;
            tokio::time::sleep(SETTLE).await;
            let rss_after_kib = process::memory(pid)?.rss_kib;
            let started = Instant::now();
            control_plane.apply(&changed)?;
            let (last_ack, _) = proxies.wait_for_all(Some(&first_version), ACK_TIMEOUT).await?;
            Ok(FanOutRun { streams, all_acked: last_ack.saturating_duration_since(started), rss_before_kib, rss_after_kib })
        })
    })
}
