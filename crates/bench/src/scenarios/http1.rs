//! Plain HTTP/1.1 keep-alive measurements shared by scenarios 1 to 3:
//! saturation runs with wrk and fixed-rate runs with h2load, each target in
//! turn within a round so slow drift of the machine touches all alike.

use std::collections::BTreeMap;

use anyhow::Context;

use crate::bench::Bench;
use crate::load::{self, FixedRate};
use crate::peers::Target;
use crate::process;
use crate::stats::Summary;

/// Runs per target, in round order.
pub type Runs<T> = BTreeMap<Target, Vec<T>>;

#[derive(Debug, Clone)]
pub struct SaturationRun {
    pub requests_per_second: f64,
    pub requests: u64,
    pub errors: u64,
    /// Connections the echo upstream accepted during the run.
    pub upstream_connections: u64,
}

pub type SaturationResults = Runs<SaturationRun>;

#[derive(Debug, Clone)]
pub struct FixedRateRun {
    pub load: FixedRate,
    /// CPU time of the proxy's processes during the run; `None` for the
    /// direct connection.
    pub proxy_cpu_seconds: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct FixedRateResults {
    /// Requests per second offered by all connections together.
    pub total_rate: u64,
    pub per_connection_rate: u64,
    pub runs: Runs<FixedRateRun>,
}

/// Measures saturation throughput of every target, `settings.runs` times.
pub fn measure_saturation(bench: &mut Bench) -> anyhow::Result<SaturationResults> {
    bench.ensure_lab()?;
    let settings = bench.settings.clone();
    let lab = bench.lab.as_mut().context("HTTP lab not started")?;
    let mut results = SaturationResults::new();
    for round in 0..settings.runs {
        for target in Target::ALL {
            let port = lab.port(target);
            load::wrk(&bench.tools.wrk, port, settings.connections, settings.warm_up)?;
            let connections_before = lab.upstream.accepted_connections()?;
            let saturation = load::wrk(&bench.tools.wrk, port, settings.connections, settings.saturation_duration)?;
            let connections_after = lab.upstream.accepted_connections()?;
            lab.ensure_running()?;
            eprintln!(
                "  round {round} {:8} {:>9.0} req/s, {} errors, {} upstream connections opened",
                target.name(),
                saturation.requests_per_second,
                saturation.errors,
                connections_after - connections_before
            );
            results.entry(target).or_default().push(SaturationRun {
                requests_per_second: saturation.requests_per_second,
                requests: saturation.requests,
                errors: saturation.errors,
                upstream_connections: connections_after - connections_before,
            });
        }
    }
    Ok(results)
}

/// Half the median saturation rate of the slowest proxy, in requests per
/// second over all connections.
pub fn half_of_slowest_proxy(saturation: &SaturationResults) -> anyhow::Result<f64> {
    Target::PROXIES
        .iter()
        .filter_map(|target| median_of(saturation.get(target)?, |run| run.requests_per_second))
        .min_by(f64::total_cmp)
        .map(|slowest| slowest / 2.0)
        .context("no saturation figure for any proxy")
}

/// Measures latency and proxy CPU of every target at `total_rate`.
pub fn measure_fixed_rate(bench: &mut Bench, total_rate: f64) -> anyhow::Result<FixedRateResults> {
    bench.ensure_lab()?;
    let settings = bench.settings.clone();
    let per_connection_rate = ((total_rate / settings.connections as f64).floor() as u64).max(1);
    let lab = bench.lab.as_mut().context("HTTP lab not started")?;
    let mut runs = Runs::<FixedRateRun>::new();
    for round in 0..settings.runs {
        for target in Target::ALL {
            let port = lab.port(target);
            load::wrk(&bench.tools.wrk, port, settings.connections, settings.warm_up)?;
            let pid = lab.proxy_pid(target);
            let cpu_before = pid.map(process::cpu_seconds);
            let log_file = load::log_path(&bench.work_dir, target.name(), round);
            let load = load::h2load_fixed_rate(
                &bench.tools.h2load,
                port,
                settings.connections,
                per_connection_rate,
                settings.fixed_rate_duration,
                &log_file,
            )?;
            let cpu_after = pid.map(process::cpu_seconds);
            lab.ensure_running()?;
            let proxy_cpu_seconds = cpu_before.zip(cpu_after).map(|(before, after)| after - before);
            eprintln!(
                "  round {round} {:8} {:>7.0} req/s, p50 {} us, p99 {} us, p99.9 {} us, {} failed",
                target.name(),
                load.achieved_per_second,
                load.p50_us,
                load.p99_us,
                load.p999_us,
                load.failed
            );
            runs.entry(target).or_default().push(FixedRateRun { load, proxy_cpu_seconds });
        }
    }
    Ok(FixedRateResults { total_rate: per_connection_rate * settings.connections as u64, per_connection_rate, runs })
}

/// The median over runs of one figure.
pub fn median_of<T>(runs: &[T], figure: impl Fn(&T) -> f64) -> Option<f64> {
    summarize(runs, figure).map(|summary| summary.median)
}

pub fn summarize<T>(runs: &[T], figure: impl Fn(&T) -> f64) -> Option<Summary> {
    Summary::of(&runs.iter().map(figure).collect::<Vec<_>>())
}
