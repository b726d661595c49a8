//! Scenario 3: latency each proxy adds over the direct connection, at half
//! the slowest proxy's saturation rate.

use super::cpu_per_request::rate_notes;
use super::http1::{FixedRateResults, FixedRateRun};
use super::Scenario;
use crate::bench::Bench;
use crate::peers::Target;
use crate::report::metric::{format_ratio, Better, Metric};
use crate::report::{Goal, Plot, Section};
use crate::stats::Summary;

pub struct AddedLatency;

/// Legate's added p99 must be at most this multiple of the best peer's.
const P99_GOAL: f64 = 0.8;

pub(super) type Percentile = (&'static str, fn(&FixedRateRun) -> u64);

pub(super) const PERCENTILES: [Percentile; 3] = [
    ("p50", |run| run.load.p50_us),
    ("p99", |run| run.load.p99_us),
    ("p99.9", |run| run.load.p999_us),
];

impl Scenario for AddedLatency {
    fn number(&self) -> u8 {
        3
    }

    fn title(&self) -> &'static str {
        "Added latency at half the slowest proxy's saturation rate"
    }

    fn run(&self, bench: &mut Bench) -> anyhow::Result<Section> {
        let results = bench.fixed_rate()?;
        let mut section = Section::new(
            self,
            format!(
                "The fixed-rate runs of scenario 1 ({} req/s over {} connections, {} per connection), timed by h2load \
                 per request. Added latency is a proxy's percentile minus the direct connection's in the same round. \
                 h2load times a request from when it sends it, so a request that waited for the previous one on its \
                 connection is not charged for the wait (no coordinated-omission correction).",
                results.total_rate,
                results.total_rate / results.per_connection_rate.max(1),
                results.per_connection_rate
            ),
        );

        let absolute: Vec<Metric> = PERCENTILES.iter().map(|(name, value)| absolute_metric(results, name, *value)).collect();
        let added: Vec<Metric> = PERCENTILES.iter().map(|(name, value)| added_metric(results, name, *value)).collect();
        section.goals.push(p99_goal(&added[1]));
        section.notes.extend(rate_notes(results));
        section.tables.extend(added.iter().map(Metric::table));
        section.tables.extend(absolute.iter().map(Metric::table));
        section.plots.push(percentile_plot("added_latency.svg", "Latency added over the direct connection", &added));
        section.plots.push(percentile_plot("latency.svg", "Latency percentiles at a fixed rate", &absolute));
        Ok(section)
    }
}

pub(super) fn absolute_metric(results: &FixedRateResults, name: &'static str, value: fn(&FixedRateRun) -> u64) -> Metric {
    let mut metric = Metric::new(name, "us", Better::Lower);
    for (target, runs) in &results.runs {
        metric.insert(*target, Summary::of(&runs.iter().map(|run| value(run) as f64).collect::<Vec<_>>()));
    }
    metric
}

/// Subtracts the direct connection's percentile from each proxy's, round by round.
pub(super) fn added_metric(results: &FixedRateResults, name: &'static str, value: fn(&FixedRateRun) -> u64) -> Metric {
    let label: &'static str = match name {
        "p50" => "added p50",
        "p99" => "added p99",
        _ => "added p99.9",
    };
    let mut metric = Metric::new(label, "us", Better::Lower);
    let Some(direct) = results.runs.get(&Target::Direct) else { return metric };
    for target in Target::PROXIES {
        let Some(runs) = results.runs.get(&target) else { continue };
        let added: Vec<f64> = runs.iter().zip(direct).map(|(run, base)| value(run) as f64 - value(base) as f64).collect();
        metric.insert(target, Summary::of(&added));
    }
    metric
}

fn p99_goal(added_p99: &Metric) -> Goal {
    let legate = added_p99.median(Target::Legate);
    let best = added_p99.best_peer();
    let measured = match (legate, best) {
        (Some(legate), Some((peer, best))) => {
            format!("{} (legate +{legate:.0} us, {} +{best:.0} us)", format_ratio(added_p99.ratio_to_best_peer(Target::Legate)), peer.name())
        }
        _ => "-".to_string(),
    };
    Goal {
        goal: format!("added p99 <= {P99_GOAL}x best peer"),
        measured,
        // Compared directly, because a ratio is undefined when the best
        // peer adds nothing measurable.
        met: legate.zip(best).is_some_and(|(legate, (_, best))| legate <= P99_GOAL * best),
    }
}

pub(super) fn percentile_plot(file_name: &str, title: &str, metrics: &[Metric]) -> Plot {
    let targets: Vec<Target> = Target::ALL.into_iter().filter(|target| metrics.iter().any(|m| m.values.contains_key(target))).collect();
    Plot {
        file_name: file_name.into(),
        title: title.into(),
        unit: "microseconds".into(),
        series: metrics.iter().map(|metric| metric.name.to_string()).collect(),
        groups: targets
            .iter()
            .map(|target| (target.name().to_string(), metrics.iter().map(|metric| metric.values.get(target).copied()).collect()))
            .collect(),
    }
}
