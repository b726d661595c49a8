//! Scenario 2: HTTP/1.1 keep-alive throughput at saturation with one
//! worker, and how often each proxy opens an upstream connection.

use super::http1::{summarize, SaturationResults};
use super::Scenario;
use crate::bench::Bench;
use crate::peers::Target;
use crate::report::metric::{format_ratio, format_value, Better, Metric};
use crate::report::{Goal, Plot, Section};

pub struct Throughput;

/// Legate's saturation throughput must be at least this multiple of the
/// best peer's.
const THROUGHPUT_GOAL: f64 = 1.1;
/// Share of requests, in percent, that must reuse an upstream connection.
const REUSE_GOAL_PERCENT: f64 = 99.9;

impl Scenario for Throughput {
    fn number(&self) -> u8 {
        2
    }

    fn title(&self) -> &'static str {
        "HTTP/1.1 keep-alive throughput at saturation"
    }

    fn run(&self, bench: &mut Bench) -> anyhow::Result<Section> {
        let connections = bench.settings.connections;
        let results = bench.saturation()?;
        let mut section = Section::new(
            self,
            format!(
                "wrk (one thread, {connections} keep-alive connections) sends GET requests as fast as each target responds. \
                 The echo upstream counts the connections it accepts; a proxy that reuses its upstream connections \
                 opens none after the warm-up."
            ),
        );

        let throughput = throughput_metric(results);
        let reuse = reuse_metric(results);
        section.goals.push(throughput_goal(&throughput));
        section.goals.push(reuse_goal(&reuse));
        section.notes.extend(error_notes(results));
        section.tables.push(throughput.table());
        section.tables.push(reuse.table());
        section.plots.push(Plot {
            file_name: "throughput.svg".into(),
            title: "Saturation throughput, HTTP/1.1 keep-alive, one worker".into(),
            unit: "requests per second".into(),
            series: vec!["req/s".into()],
            groups: throughput.values.iter().map(|(target, summary)| (target.name().to_string(), vec![Some(*summary)])).collect(),
        });
        Ok(section)
    }
}

fn throughput_metric(results: &SaturationResults) -> Metric {
    let mut metric = Metric::new("Saturation throughput", "req/s", Better::Higher);
    for (target, runs) in results {
        metric.insert(*target, summarize(runs, |run| run.requests_per_second));
    }
    metric
}

/// Upstream connections opened per 1,000 requests, for the proxies only:
/// the direct connection's count is the load generator's own connections.
fn reuse_metric(results: &SaturationResults) -> Metric {
    let mut metric = Metric::new("Upstream connections opened per 1,000 requests", "connections", Better::Lower);
    for (target, runs) in results.iter().filter(|(target, _)| **target != Target::Direct) {
        metric.insert(*target, summarize(runs, |run| run.upstream_connections as f64 * 1000.0 / run.requests.max(1) as f64));
    }
    metric
}

fn throughput_goal(metric: &Metric) -> Goal {
    let ratio = metric.ratio_to_best_peer(Target::Legate);
    Goal {
        goal: format!("throughput >= {THROUGHPUT_GOAL}x best peer"),
        measured: format!(
            "{} ({} req/s)",
            format_ratio(ratio),
            metric.median(Target::Legate).map_or("-".to_string(), format_value)
        ),
        met: ratio.is_some_and(|ratio| ratio >= THROUGHPUT_GOAL),
    }
}

fn reuse_goal(metric: &Metric) -> Goal {
    let opened = metric.values.get(&Target::Legate).map(|summary| summary.max);
    let reuse_percent = opened.map(|per_thousand| 100.0 - per_thousand / 10.0);
    Goal {
        goal: format!(">= {REUSE_GOAL_PERCENT}% upstream connection reuse"),
        measured: reuse_percent.map_or("-".to_string(), |percent| format!("{percent:.3}% (worst run)")),
        met: reuse_percent.is_some_and(|percent| percent >= REUSE_GOAL_PERCENT),
    }
}

fn error_notes(results: &SaturationResults) -> Vec<String> {
    results
        .iter()
        .filter_map(|(target, runs)| {
            let errors: u64 = runs.iter().map(|run| run.errors).sum();
            (errors > 0).then(|| format!("{} had {errors} failed requests or socket errors over its runs.", target.name()))
        })
        .collect()
}
