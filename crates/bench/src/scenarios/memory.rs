//! Scenario 8: memory of each proxy at rest, per idle keep-alive connection,
//! and per cluster plus route of config.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::Scenario;
use crate::bench::Bench;
use crate::http_client::Connection;
use crate::peers::{self, Layout, Protocol, Target};
use crate::process::{self, Memory as ProcessMemory};
use crate::report::metric::{format_value, Better, Metric};
use crate::report::{Goal, Plot, Section};
use crate::stats::Summary;
use crate::upstream::EchoUpstream;

pub struct Memory;

pub const NUMBER: u8 = 8;
/// Maximum resident memory of Legate at rest, in KiB.
const REST_GOAL_KIB: f64 = 10.0 * 1024.0;
/// Maximum memory one cluster plus one route may add, in KiB.
const PER_ENTRY_GOAL_KIB: f64 = 4.0;
/// Time a proxy gets to settle before its memory is read.
const SETTLE: Duration = Duration::from_millis(1000);

/// One proxy's figures from one run, in KiB.
struct MemoryRun {
    rest: ProcessMemory,
    per_connection_kib: f64,
    per_entry_kib: f64,
}

impl Scenario for Memory {
    fn number(&self) -> u8 {
        NUMBER
    }

    fn title(&self) -> &'static str {
        "Memory at rest, per connection and per cluster plus route"
    }

    fn run(&self, bench: &mut Bench) -> anyhow::Result<Section> {
        let settings = bench.settings.clone();
        let dir = bench.work_dir.join("memory");
        std::fs::create_dir_all(&dir)?;
        let upstream = EchoUpstream::start(settings.body_bytes, &dir)?;
        let mut runs: BTreeMap<Target, Vec<MemoryRun>> = BTreeMap::new();
        for _ in 0..settings.runs {
            for target in Target::PROXIES {
                let run = measure(bench, target, upstream.port, &dir)?;
                runs.entry(target).or_default().push(run);
            }
        }

        let mut section = Section::new(
            self,
            format!(
                "Each proxy starts fresh with the config of scenarios 1-3 and is read after {SETTLE:?} at rest. \
                 RSS is the resident set summed over the proxy's processes, so nginx's master and worker count the \
                 pages they share twice; PSS counts a shared page once and is the fair comparison, but it also splits \
                 library and binary pages with any other process that maps them. Per connection: \
                 the PSS growth after {} keep-alive connections each made one request and stayed open. Per cluster \
                 plus route: a second start with {} extra clusters, each with one endpoint and one prefix route \
                 (nginx: upstream blocks and locations; HAProxy: backends and use_backend rules), PSS growth divided \
                 by {}.",
                settings.idle_connections, settings.scale, settings.scale
            ),
        );
        let rest_rss = metric_of(&runs, "RSS at rest", "KiB", |run| run.rest.rss_kib as f64);
        let rest_pss = metric_of(&runs, "PSS at rest", "KiB", |run| run.rest.pss_kib as f64);
        let per_connection = metric_of(&runs, "Memory per idle keep-alive connection (PSS)", "KiB", |run| run.per_connection_kib);
        let per_entry = metric_of(&runs, "Memory per cluster plus route (PSS)", "KiB", |run| run.per_entry_kib);
        section.goals.extend(goals(&rest_rss, &rest_pss, &per_entry));
        for metric in [&rest_rss, &rest_pss, &per_connection, &per_entry] {
            section.tables.push(metric.table());
        }
        section.plots.push(single_plot("memory_at_rest.svg", "Memory at rest (PSS)", &rest_pss));
        section.plots.push(single_plot("memory_per_connection.svg", "Memory per idle keep-alive connection (PSS)", &per_connection));
        section.plots.push(single_plot("memory_per_cluster_route.svg", "Memory per cluster plus route (PSS)", &per_entry));
        Ok(section)
    }
}

fn measure(bench: &Bench, target: Target, upstream_port: u16, dir: &Path) -> anyhow::Result<MemoryRun> {
    let settings = &bench.settings;
    let base = Layout { protocol: Protocol::Http1, upstream_port, scale: 0 };
    let mut proxy = peers::start(target, base, &bench.tools, &bench.legate_bin, dir)?;
    std::thread::sleep(SETTLE);
    let rest = process::memory(proxy.process.pid())?;

    let connections = open_idle_connections(proxy.port, settings.idle_connections)?;
    std::thread::sleep(SETTLE);
    let with_connections = process::memory(proxy.process.pid())?;
    drop(connections);
    proxy.process.stop();

    let scaled_layout = Layout { protocol: Protocol::Http1, upstream_port, scale: settings.scale };
    let scaled = peers::start(target, scaled_layout, &bench.tools, &bench.legate_bin, dir)?;
    scaled.check_forwarding(&format!("/svc-{}/", settings.scale - 1))?;
    std::thread::sleep(SETTLE);
    let scaled_memory = process::memory(scaled.process.pid())?;

    let per_connection_kib = (with_connections.pss_kib as f64 - rest.pss_kib as f64) / settings.idle_connections as f64;
    let per_entry_kib = (scaled_memory.pss_kib as f64 - rest.pss_kib as f64) / settings.scale as f64;
    eprintln!(
        "  {:8} rest RSS {} KiB, PSS {} KiB; {per_connection_kib:.1} KiB per connection; {per_entry_kib:.2} KiB per cluster+route",
        target.name(),
        rest.rss_kib,
        rest.pss_kib
    );
    Ok(MemoryRun { rest, per_connection_kib, per_entry_kib })
}

/// Opens `count` keep-alive connections, each with one completed request.
fn open_idle_connections(port: u16, count: usize) -> anyhow::Result<Vec<Connection>> {
    (0..count)
        .map(|_| {
            let mut connection = Connection::open(port)?;
            connection.get("/")?;
            Ok(connection)
        })
        .collect()
}

fn metric_of(runs: &BTreeMap<Target, Vec<MemoryRun>>, name: &'static str, unit: &'static str, value: impl Fn(&MemoryRun) -> f64) -> Metric {
    let mut metric = Metric::new(name, unit, Better::Lower);
    for (target, target_runs) in runs {
        metric.insert(*target, Summary::of(&target_runs.iter().map(&value).collect::<Vec<_>>()));
    }
    metric
}

fn goals(rest_rss: &Metric, rest_pss: &Metric, per_entry: &Metric) -> Vec<Goal> {
    let legate_rss = rest_rss.median(Target::Legate);
    let legate_pss = rest_pss.median(Target::Legate);
    let best_pss = rest_pss.best_peer();
    let legate_entry = per_entry.median(Target::Legate);
    let kib = |value: Option<f64>| value.map_or("-".to_string(), |value| format!("{} KiB", format_value(value)));
    vec![
        Goal {
            goal: "RSS at rest <= 10 MiB".into(),
            measured: kib(legate_rss),
            met: legate_rss.is_some_and(|rss| rss <= REST_GOAL_KIB),
        },
        Goal {
            goal: "memory at rest <= best peer (PSS)".into(),
            measured: format!(
                "{} vs {} {}",
                kib(legate_pss),
                best_pss.map_or("-", |(peer, _)| peer.name()),
                kib(best_pss.map(|(_, value)| value))
            ),
            met: legate_pss.zip(best_pss).is_some_and(|(legate, (_, best))| legate <= best),
        },
        Goal {
            goal: "<= 4 KiB per cluster plus route".into(),
            measured: kib(legate_entry),
            met: legate_entry.is_some_and(|value| value <= PER_ENTRY_GOAL_KIB),
        },
    ]
}

fn single_plot(file_name: &str, title: &str, metric: &Metric) -> Plot {
    Plot {
        file_name: file_name.into(),
        title: title.into(),
        unit: metric.unit.into(),
        series: vec![metric.name.into()],
        groups: metric.values.iter().map(|(target, summary)| (target.name().to_string(), vec![Some(*summary)])).collect(),
    }
}
