//! Scenario 4: gRPC unary calls over h2c, proxy CPU per call at saturation
//! and the p99 latency each proxy adds at a fixed rate.

use anyhow::Context;

use super::added_latency::{absolute_metric, added_metric, percentile_plot, PERCENTILES};
use super::cpu_per_request::rate_notes;
use super::grpc::{self, CallRun};
use super::http1::{median_of, summarize, FixedRateResults, FixedRateRun, Runs};
use super::Scenario;
use crate::bench::Bench;
use crate::grpc_client::Form;
use crate::grpc_wire;
use crate::load::{self, GrpcCall};
use crate::peers::Target;
use crate::report::metric::{format_ratio, format_value, Better, Metric};
use crate::report::{Goal, Plot, Section};

pub struct GrpcUnary;

/// Legate's CPU per call must be at most this multiple of the best peer's.
const CPU_GOAL: f64 = 0.85;

impl Scenario for GrpcUnary {
    fn number(&self) -> u8 {
        4
    }

    fn title(&self) -> &'static str {
        "gRPC unary calls over h2c: CPU per call and added p99"
    }

    fn run(&self, bench: &mut Bench) -> anyhow::Result<Section> {
        bench.ensure_grpc_lab()?;
        let saturation = measure_saturation(bench)?;
        let rate = half_of_slowest_proxy(&saturation)?;
        let fixed = measure_fixed_rate(bench, rate)?;
        let settings = &bench.settings;

        let mut section = Section::new(
            self,
            format!(
                "h2load over HTTP/2 with prior knowledge ({} connections, {} streams each) sends one unary call \
                 (a {}-byte message, `content-type: application/grpc`, `te: trailers`) to a hyper gRPC upstream \
                 that responds with one {}-byte message and `grpc-status: 0`. CPU per call: saturation runs of \
                 {:?}, proxy user plus system time from /proc/PID/stat divided by the calls that succeeded. Added \
                 latency: fixed-rate runs of {:?} at {} calls per second in total (half the slowest proxy's \
                 saturation rate), each percentile minus the direct connection's in the same round. h2load counts \
                 HTTP status only; each proxy's `grpc-status` is checked once when it starts.",
                settings.grpc_connections,
                settings.grpc_streams,
                grpc::REQUEST_MESSAGE_BYTES,
                settings.grpc_message_bytes,
                settings.saturation_duration,
                settings.fixed_rate_duration,
                fixed.total_rate
            ),
        );
        let mut cpu = Metric::new("Proxy CPU per gRPC call", "us", Better::Lower);
        let mut calls = Metric::new("gRPC calls per second at saturation", "calls/s", Better::Higher);
        for (target, runs) in &saturation {
            cpu.insert(*target, summarize(runs, CallRun::cpu_per_call_us));
            calls.insert(*target, summarize(runs, |run| run.load.requests_per_second));
        }
        let added: Vec<Metric> = PERCENTILES.iter().map(|(name, value)| added_metric(&fixed, name, *value)).collect();
        let absolute: Vec<Metric> = PERCENTILES.iter().map(|(name, value)| absolute_metric(&fixed, name, *value)).collect();

        section.goals.push(cpu_goal(&cpu));
        section.goals.push(p99_goal(&added[1]));
        section.notes.extend(error_notes(&saturation));
        section.notes.extend(rate_notes(&fixed));
        section.tables.extend([cpu.table(), calls.table()]);
        section.tables.extend(added.iter().chain(&absolute).map(Metric::table));
        section.plots.push(Plot {
            file_name: "grpc_cpu_per_call.svg".into(),
            title: "Proxy CPU per gRPC unary call at saturation".into(),
            unit: "CPU microseconds per call".into(),
            series: vec!["CPU".into()],
            groups: cpu.values.iter().map(|(target, summary)| (target.name().to_string(), vec![Some(*summary)])).collect(),
        });
        section.plots.push(percentile_plot("grpc_added_latency.svg", "gRPC latency added over the direct connection", &added));
        Ok(section)
    }
}

fn measure_saturation(bench: &mut Bench) -> anyhow::Result<Runs<CallRun>> {
    let mut results = Runs::<CallRun>::new();
    for round in 0..bench.settings.runs {
        for target in Target::ALL {
            let lab = bench.grpc.as_ref().context("gRPC lab not started")?;
            let (port, pid) = (lab.port(target), lab.proxy_pid(target));
            let run = grpc::saturate(&bench.tools, &bench.settings, &lab.dir, port, pid, Form::Grpc)?;
            bench.grpc.as_mut().context("gRPC lab not started")?.ensure_running()?;
            eprintln!(
                "  round {round} {:8} {:>9.0} calls/s, {} failed, {} us proxy CPU per call",
                target.name(),
                run.load.requests_per_second,
                run.load.errors,
                format_optional(run.cpu_per_call_us())
            );
            results.entry(target).or_default().push(run);
        }
    }
    Ok(results)
}

fn half_of_slowest_proxy(saturation: &Runs<CallRun>) -> anyhow::Result<f64> {
    Target::PROXIES
        .iter()
        .filter_map(|target| median_of(saturation.get(target)?, |run| run.load.requests_per_second))
        .min_by(f64::total_cmp)
        .map(|slowest| slowest / 2.0)
        .context("no gRPC saturation figure for any proxy")
}

fn measure_fixed_rate(bench: &mut Bench, total_rate: f64) -> anyhow::Result<FixedRateResults> {
    let settings = bench.settings.clone();
    let per_connection_rate = ((total_rate / settings.grpc_connections as f64).floor() as u64).max(1);
    let mut runs = Runs::<FixedRateRun>::new();
    for round in 0..settings.runs {
        for target in Target::ALL {
            let lab = bench.grpc.as_ref().context("gRPC lab not started")?;
            let (port, pid) = (lab.port(target), lab.proxy_pid(target));
            let (body_file, headers) = grpc::unary_call(&lab.dir, Form::Grpc);
            let call = GrpcCall { path: grpc_wire::UNARY_PATH, headers, body_file: &body_file };
            let log_file = load::log_path(&lab.dir, target.name(), round);
            let cpu_before = pid.map(crate::process::cpu_seconds);
            let load = load::h2load_grpc_fixed_rate(
                &bench.tools.h2load,
                port,
                &call,
                grpc::shape(&settings),
                per_connection_rate,
                settings.fixed_rate_duration,
                &log_file,
            )?;
            let cpu_after = pid.map(crate::process::cpu_seconds);
            bench.grpc.as_mut().context("gRPC lab not started")?.ensure_running()?;
            eprintln!(
                "  round {round} {:8} {:>7.0} calls/s, p50 {} us, p99 {} us, {} failed",
                target.name(),
                load.achieved_per_second,
                load.p50_us,
                load.p99_us,
                load.failed
            );
            let proxy_cpu_seconds = cpu_before.zip(cpu_after).map(|(before, after)| after - before);
            runs.entry(target).or_default().push(FixedRateRun { load, proxy_cpu_seconds });
        }
    }
    Ok(FixedRateResults { total_rate: per_connection_rate * settings.grpc_connections as u64, per_connection_rate, runs })
}

fn cpu_goal(cpu: &Metric) -> Goal {
    let ratio = cpu.ratio_to_best_peer(Target::Legate);
    Goal {
        goal: format!("CPU per gRPC call <= {CPU_GOAL}x best peer"),
        measured: format!("{} ({} us)", format_ratio(ratio), cpu.median(Target::Legate).map_or("-".to_string(), format_value)),
        met: ratio.is_some_and(|ratio| ratio <= CPU_GOAL),
    }
}

fn p99_goal(added_p99: &Metric) -> Goal {
    let legate = added_p99.median(Target::Legate);
    let best = added_p99.best_peer();
    let measured = match (legate, best) {
        (Some(legate), Some((peer, best))) => format!("legate +{legate:.0} us, {} +{best:.0} us", peer.name()),
        _ => "-".to_string(),
    };
    Goal { goal: "gRPC added p99 <= best peer".into(), measured, met: legate.zip(best).is_some_and(|(legate, (_, best))| legate <= best) }
}

/// Formats a figure that is NaN without a proxy as "-".
pub fn format_optional(value: f64) -> String {
    if value.is_nan() {
        "-".to_string()
    } else {
        format_value(value)
    }
}

/// Flags targets with failed calls in the saturation runs.
pub fn error_notes(saturation: &Runs<CallRun>) -> Vec<String> {
    saturation
        .iter()
        .filter_map(|(target, runs)| {
            let failed: u64 = runs.iter().map(|run| run.load.errors).sum();
            (failed > 0).then(|| format!("{} failed {failed} calls over all saturation runs.", target.name()))
        })
        .collect()
}
