//! Scenario 5: gRPC server streaming with 1 KiB messages, messages relayed
//! per second of proxy CPU.

use anyhow::Context;

use super::grpc_unary::format_optional;
use super::http1::{summarize, Runs};
use super::Scenario;
use crate::bench::Bench;
use crate::grpc_client::{self, StreamLoad, StreamPlan};
use crate::peers::Target;
use crate::process;
use crate::report::metric::{format_ratio, format_value, Better, Metric};
use crate::report::{Goal, Plot, Section};

pub struct GrpcStreaming;

/// Legate's messages per CPU-second must be at least this multiple of the best peer's.
const GOAL: f64 = 1.2;

struct StreamRun {
    load: StreamLoad,
    /// `None` for the direct connection.
    proxy_cpu_seconds: Option<f64>,
}

impl StreamRun {
    fn messages_per_cpu_second(&self) -> f64 {
        self.proxy_cpu_seconds.map_or(f64::NAN, |seconds| self.load.messages as f64 / seconds)
    }
}

impl Scenario for GrpcStreaming {
    fn number(&self) -> u8 {
        5
    }

    fn title(&self) -> &'static str {
        "gRPC server streaming: messages per proxy CPU-second"
    }

    fn run(&self, bench: &mut Bench) -> anyhow::Result<Section> {
        bench.ensure_grpc_lab()?;
        let settings = bench.settings.clone();
        let plan = StreamPlan {
            connections: settings.stream_connections,
            streams_per_connection: settings.stream_streams,
            message_bytes: settings.grpc_message_bytes,
            duration: settings.saturation_duration,
        };
        let mut runs = Runs::<StreamRun>::new();
        for round in 0..settings.runs {
            for target in Target::ALL {
                let run = measure(bench, target, plan)?;
                eprintln!(
                    "  round {round} {:8} {:>9.0} messages/s, {} failed calls, {} messages per proxy CPU-second",
                    target.name(),
                    run.load.messages as f64 / run.load.seconds,
                    run.load.errors,
                    format_optional(run.messages_per_cpu_second())
                );
                runs.entry(target).or_default().push(run);
            }
        }

        let mut section = Section::new(
            self,
            format!(
                "The harness's own HTTP/2 client (hyper, on the load core) opens {} h2c connections with {} calls \
                 in flight on each, and calls the upstream's server-streaming method back to back for {:?}; every \
                 call returns {} messages of {} bytes and `grpc-status: 0`. Messages count only from calls that \
                 ended with status 0. Per CPU-second: messages divided by the proxy's user plus system time from \
                 /proc/PID/stat over the same run.",
                plan.connections, plan.streams_per_connection, plan.duration, settings.stream_messages, settings.grpc_message_bytes
            ),
        );
        let mut per_cpu = Metric::new("Messages per proxy CPU-second", "messages", Better::Higher);
        let mut per_second = Metric::new("Messages per second", "messages/s", Better::Higher);
        for (target, target_runs) in &runs {
            per_cpu.insert(*target, summarize(target_runs, StreamRun::messages_per_cpu_second));
            per_second.insert(*target, summarize(target_runs, |run| run.load.messages as f64 / run.load.seconds));
            let failed: u64 = target_runs.iter().map(|run| run.load.errors).sum();
            if failed > 0 {
                section.notes.push(format!("{} failed {failed} streaming calls over all runs.", target.name()));
            }
        }
        let ratio = per_cpu.ratio_to_best_peer(Target::Legate);
        section.goals.push(Goal {
            goal: format!("messages per proxy CPU-second >= {GOAL}x best peer"),
            measured: format!("{} ({})", format_ratio(ratio), per_cpu.median(Target::Legate).map_or("-".to_string(), format_value)),
            met: ratio.is_some_and(|ratio| ratio >= GOAL),
        });
        section.tables.extend([per_cpu.table(), per_second.table()]);
        section.plots.push(Plot {
            file_name: "grpc_streaming.svg".into(),
            title: "gRPC streamed messages per proxy CPU-second".into(),
            unit: "messages per CPU-second".into(),
            series: vec!["messages".into()],
            groups: per_cpu.values.iter().map(|(target, summary)| (target.name().to_string(), vec![Some(*summary)])).collect(),
        });
        Ok(section)
    }
}

fn measure(bench: &mut Bench, target: Target, plan: StreamPlan) -> anyhow::Result<StreamRun> {
    let lab = bench.grpc.as_ref().context("gRPC lab not started")?;
    let (port, pid) = (lab.port(target), lab.proxy_pid(target));
    let warm_up = StreamPlan { duration: bench.settings.warm_up, ..plan };
    let (load, proxy_cpu_seconds) = process::on_load_core(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            grpc_client::stream_load(port, warm_up).await?;
            let cpu_before = pid.map(process::cpu_seconds);
            let load = grpc_client::stream_load(port, plan).await?;
            let cpu_after = pid.map(process::cpu_seconds);
            anyhow::Ok((load, cpu_before.zip(cpu_after).map(|(before, after)| after - before)))
        })
    })?;
    bench.grpc.as_mut().context("gRPC lab not started")?.ensure_running()?;
    Ok(StreamRun { load, proxy_cpu_seconds })
}
