//! Scenario 1: proxy CPU time per request, HTTP/1.1 keep-alive, at a fixed
//! rate below saturation.

use super::http1::{summarize, FixedRateResults};
use super::Scenario;
use crate::bench::Bench;
use crate::peers::Target;
use crate::report::metric::{format_ratio, format_value, Better, Metric};
use crate::report::{Goal, Plot, Section};

pub struct CpuPerRequest;

/// Legate's CPU per request must be at most this multiple of the best peer's.
const CPU_GOAL: f64 = 0.9;

impl Scenario for CpuPerRequest {
    fn number(&self) -> u8 {
        1
    }

    fn title(&self) -> &'static str {
        "Proxy CPU per request at a fixed rate"
    }

    fn run(&self, bench: &mut Bench) -> anyhow::Result<Section> {
        let connections = bench.settings.connections;
        let results = bench.fixed_rate()?;
        let mut section = Section::new(
            self,
            format!(
                "h2load (HTTP/1.1, {connections} connections) offers {} requests per second in total, half the \
                 slowest proxy's saturation rate from scenario 2. The proxy's CPU time is user plus system time \
                 from /proc/PID/stat of the proxy and its child processes, read before and after each run, divided \
                 by the requests that succeeded.",
                results.total_rate
            ),
        );
        let metric = cpu_metric(results);
        let ratio = metric.ratio_to_best_peer(Target::Legate);
        section.goals.push(Goal {
            goal: format!("CPU per request <= {CPU_GOAL}x best peer"),
            measured: format!(
                "{} ({} us)",
                format_ratio(ratio),
                metric.median(Target::Legate).map_or("-".to_string(), format_value)
            ),
            met: ratio.is_some_and(|ratio| ratio <= CPU_GOAL),
        });
        section.notes.extend(rate_notes(results));
        section.tables.push(metric.table());
        section.plots.push(Plot {
            file_name: "cpu_per_request.svg".into(),
            title: format!("Proxy CPU per request at {} req/s", results.total_rate),
            unit: "CPU microseconds per request".into(),
            series: vec!["CPU".into()],
            groups: metric.values.iter().map(|(target, summary)| (target.name().to_string(), vec![Some(*summary)])).collect(),
        });
        Ok(section)
    }
}

fn cpu_metric(results: &FixedRateResults) -> Metric {
    let mut metric = Metric::new("Proxy CPU per request", "us", Better::Lower);
    for (target, runs) in &results.runs {
        let cpu = |run: &super::http1::FixedRateRun| {
            run.proxy_cpu_seconds.map_or(f64::NAN, |seconds| seconds * 1e6 / run.load.succeeded.max(1) as f64)
        };
        metric.insert(*target, summarize(runs, cpu));
    }
    metric
}

/// Flags targets that fell short of the offered rate or failed requests,
/// since their figures then do not describe the same work.
pub fn rate_notes(results: &FixedRateResults) -> Vec<String> {
    let expected = results.total_rate as f64;
    results
        .runs
        .iter()
        .filter_map(|(target, runs)| {
            let slowest = runs.iter().map(|run| run.load.achieved_per_second).fold(f64::INFINITY, f64::min);
            let failed: u64 = runs.iter().map(|run| run.load.failed).sum();
            (slowest < expected * 0.95 || failed > 0).then(|| {
                format!(
                    "{} reached {slowest:.0} of the {expected:.0} req/s offered in its slowest run, with {failed} failed requests in all runs.",
                    target.name()
                )
            })
        })
        .collect()
}
