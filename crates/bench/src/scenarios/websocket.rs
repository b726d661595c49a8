//! Scenario 7: proxied WebSockets, memory per idle connection and echo
//! messages per second with some of them active.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::http1::{summarize, Runs};
use super::Scenario;
use crate::bench::Bench;
use crate::peers::{self, Layout, Protocol, Target};
use crate::process::{self, CoreTicks};
use crate::report::metric::{format_ratio, format_value, Better, Metric};
use crate::report::{Goal, Plot, Section};
use crate::upstream::UpstreamProcess;
use crate::websocket_client::{self, EchoLoad};

pub struct WebSocket;

pub const NUMBER: u8 = 7;
/// Legate's memory per idle WebSocket must be at most this multiple of the best peer's.
const MEMORY_GOAL: f64 = 0.5;
/// Open files a proxy keeps beside two per proxied WebSocket: listeners,
/// logs, the admin port and libraries (an estimate with room to spare).
const RESERVED_FILES: u64 = 256;
/// Share of time busy from which the load core counts as the echo rate's limit.
const LOAD_CORE_SATURATED: f64 = 0.95;
/// Time a proxy gets to settle before its memory is read.
const SETTLE: Duration = Duration::from_millis(1000);

struct WebSocketRun {
    /// PSS growth divided by the idle connections; `None` for the direct connection.
    per_connection_kib: Option<f64>,
    echo: EchoLoad,
    /// CPU time of the proxy during the measured echo load; `None` for the direct connection.
    proxy_cpu_seconds: Option<f64>,
    /// Share of the echo load's time that the load core was busy, in 0..=1.
    load_core_busy: Option<f64>,
}

impl WebSocketRun {
    fn echoes_per_second(&self) -> f64 {
        self.echo.messages as f64 / self.echo.seconds
    }

    /// Proxy CPU per echoed message in microseconds; each echo crosses the proxy twice.
    fn cpu_per_echo_us(&self) -> f64 {
        match self.proxy_cpu_seconds {
            Some(seconds) if self.echo.messages > 0 => seconds * 1e6 / self.echo.messages as f64,
            _ => f64::NAN,
        }
    }
}

impl Scenario for WebSocket {
    fn number(&self) -> u8 {
        NUMBER
    }

    fn title(&self) -> &'static str {
        "Proxied WebSockets: memory per idle connection and echo throughput"
    }

    fn run(&self, bench: &mut Bench) -> anyhow::Result<Section> {
        let settings = bench.settings.clone();
        let idle = idle_connections(settings.websocket_idle, process::open_files_limit());
        let dir = bench.work_dir.join("websocket");
        std::fs::create_dir_all(&dir)?;
        let upstream = UpstreamProcess::start("websocket-upstream", &[], &dir)?;
        let mut runs = Runs::<WebSocketRun>::new();
        for round in 0..settings.runs {
            for target in Target::ALL {
                let run = measure(bench, target, upstream.port, idle, &dir)?;
                eprintln!(
                    "  round {round} {:8} {} KiB per idle WebSocket, {:.0} echoes/s, {} us proxy CPU per echo, load core {} busy, {} failed connections",
                    target.name(),
                    run.per_connection_kib.map_or("-".to_string(), format_value),
                    run.echoes_per_second(),
                    run.proxy_cpu_seconds.map_or("-".to_string(), |_| format_value(run.cpu_per_echo_us())),
                    run.load_core_busy.map_or("-".to_string(), percent),
                    run.echo.errors
                );
                if let Some(error) = &run.echo.first_error {
                    eprintln!("    first failed echo: {error}");
                }
                runs.entry(target).or_default().push(run);
            }
        }

        let mut section = Section::new(
            self,
            format!(
                "Each proxy starts fresh with a config that allows WebSocket upgrades, in front of a \
                 tokio-tungstenite echo upstream. The harness (tokio-tungstenite, on the load core) opens {} \
                 WebSockets through it and leaves them idle; memory per connection is the proxy's PSS growth after \
                 {SETTLE:?} divided by that count, so the shared pages of nginx's master and worker count once. Then \
                 the first {} of them send a {}-byte binary message and wait for its echo, back to back, for {:?}. \
                 The direct connection has no proxy memory and gives the echo rate without a proxy. CPU per echo is \
                 the proxy's user plus system time over the echo run divided by the echoes; when the load core is \
                 busy all the time, it caps the echo rate and CPU per echo is the fairer comparison.",
                idle, settings.websocket_active, settings.body_bytes, settings.saturation_duration
            ),
        );
        if idle < settings.websocket_idle {
            section.notes.push(format!(
                "The open files limit ({}) could not be raised, so the proxies held {idle} idle WebSockets instead of {}.",
                process::open_files_limit(),
                settings.websocket_idle
            ));
        }
        let mut memory = Metric::new("Memory per idle WebSocket (PSS)", "KiB", Better::Lower);
        let mut echoes = Metric::new("Echo messages per second", "messages/s", Better::Higher);
        let mut cpu = Metric::new("Proxy CPU per echo", "us", Better::Lower);
        for (target, target_runs) in &runs {
            memory.insert(*target, summarize(target_runs, |run| run.per_connection_kib.unwrap_or(f64::NAN)));
            echoes.insert(*target, summarize(target_runs, WebSocketRun::echoes_per_second));
            if *target != Target::Direct {
                cpu.insert(*target, summarize(target_runs, WebSocketRun::cpu_per_echo_us));
            }
            let failed: u64 = target_runs.iter().map(|run| run.echo.errors).sum();
            if failed > 0 {
                section.notes.push(format!("{}: {failed} connections stopped on a failed echo over all runs.", target.name()));
            }
        }
        if let Some((lowest, highest)) = load_core_busy_range(&runs) {
            let mut note = format!(
                "The load core was {} to {} busy during the proxied echo runs.",
                percent(lowest),
                percent(highest)
            );
            if lowest >= LOAD_CORE_SATURATED {
                note.push_str(" It, not the proxy, set the echo rate, so CPU per echo compares the proxies.");
            }
            section.notes.push(note);
        }
        section.goals.extend(goals(&memory, &echoes));
        section.tables.extend([memory.table(), echoes.table(), cpu.table()]);
        for (file_name, title, metric) in [
            ("websocket_memory_per_connection.svg", "Memory per idle proxied WebSocket (PSS)", &memory),
            ("websocket_echo_throughput.svg", "WebSocket echo messages per second", &echoes),
            ("websocket_cpu_per_echo.svg", "Proxy CPU per WebSocket echo", &cpu),
        ] {
            section.plots.push(Plot {
                file_name: file_name.into(),
                title: title.into(),
                unit: metric.unit.into(),
                series: vec![metric.name.into()],
                groups: metric.values.iter().map(|(target, summary)| (target.name().to_string(), vec![Some(*summary)])).collect(),
            });
        }
        Ok(section)
    }
}

/// Starts `target` fresh (unless direct), opens the idle WebSockets, reads
/// the proxy's memory, runs the echo load and stops the proxy.
/// Returns `requested`, or fewer when a proxy could not hold two sockets per
/// connection within `open_files_limit`.
fn idle_connections(requested: usize, open_files_limit: u64) -> usize {
    let fitting = open_files_limit.saturating_sub(RESERVED_FILES) / 2;
    requested.min(usize::try_from(fitting).unwrap_or(usize::MAX))
}

fn measure(bench: &Bench, target: Target, upstream_port: u16, idle: usize, dir: &Path) -> anyhow::Result<WebSocketRun> {
    let settings = &bench.settings;
    let layout = Layout { protocol: Protocol::WebSocket, upstream_port, scale: 0 };
    let proxy = match target {
        Target::Direct => None,
        _ => Some(peers::start(target, layout, &bench.tools, &bench.legate_bin, dir)?),
    };
    let port = proxy.as_ref().map_or(upstream_port, |proxy| proxy.port);
    let pid = proxy.as_ref().map(|proxy| proxy.process.pid());
    // The direct connection only measures the echo rate, so it opens the active connections alone.
    let idle = if pid.is_some() { idle.max(settings.websocket_active) } else { settings.websocket_active };
    let measured = process::on_load_core(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            tokio::time::sleep(SETTLE).await;
            let before = pid.map(process::memory).transpose()?;
            let mut sockets = websocket_client::open(port, idle)
                .await
                .with_context(|| format!("failed to open {idle} WebSockets through {}", target.name()))?;
            tokio::time::sleep(SETTLE).await;
            let after = pid.map(process::memory).transpose()?;
            let per_connection_kib = before.zip(after).map(|(before, after)| (after.pss_kib as f64 - before.pss_kib as f64) / idle as f64);
            let active = sockets.drain(..settings.websocket_active).collect();
            let (active, _) = websocket_client::echo_load(active, settings.body_bytes, settings.warm_up).await;

            let cpu_before = pid.map(process::cpu_seconds);
            let core_before = CoreTicks::read(process::LOAD_CORE);
            let (_, echo) = websocket_client::echo_load(active, settings.body_bytes, settings.saturation_duration).await;
            let cpu_after = pid.map(process::cpu_seconds);
            let core_after = CoreTicks::read(process::LOAD_CORE);

            let proxy_cpu_seconds = cpu_before.zip(cpu_after).map(|(before, after)| after - before);
            let load_core_busy = core_before.zip(core_after).and_then(|(before, after)| before.busy_share_until(&after));
            anyhow::Ok((per_connection_kib, echo, proxy_cpu_seconds, load_core_busy))
        })
    });
    let (per_connection_kib, echo, proxy_cpu_seconds, load_core_busy) = measured?;
    if let Some(mut proxy) = proxy {
        proxy.process.ensure_running()?;
        proxy.process.stop();
    }
    Ok(WebSocketRun { per_connection_kib, echo, proxy_cpu_seconds, load_core_busy })
}

/// Returns the lowest and highest share of time the load core was busy over
/// the proxied echo runs.
fn load_core_busy_range(runs: &Runs<WebSocketRun>) -> Option<(f64, f64)> {
    runs.iter()
        .filter(|(target, _)| **target != Target::Direct)
        .flat_map(|(_, target_runs)| target_runs.iter().filter_map(|run| run.load_core_busy))
        .fold(None, |range, share| match range {
            None => Some((share, share)),
            Some((lowest, highest)) => Some((f64::min(lowest, share), f64::max(highest, share))),
        })
}

/// Formats a share in 0..=1 as a whole percentage, rounded down so that
/// 99.6% does not read as 100%.
fn percent(share: f64) -> String {
    format!("{}%", (share * 100.0).floor())
}

fn goals(memory: &Metric, echoes: &Metric) -> Vec<Goal> {
    let memory_ratio = memory.ratio_to_best_peer(Target::Legate);
    let echo_ratio = echoes.ratio_to_best_peer(Target::Legate);
    vec![
        Goal {
            goal: format!("memory per idle WebSocket <= {MEMORY_GOAL}x best peer"),
            measured: format!("{} ({} KiB)", format_ratio(memory_ratio), memory.median(Target::Legate).map_or("-".to_string(), format_value)),
            met: memory_ratio.is_some_and(|ratio| ratio <= MEMORY_GOAL),
        },
        Goal {
            goal: "WebSocket echo messages per second >= best peer".into(),
            measured: format!("{} ({}/s)", format_ratio(echo_ratio), echoes.median(Target::Legate).map_or("-".to_string(), format_value)),
            met: echo_ratio.is_some_and(|ratio| ratio >= 1.0),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_fit_the_open_files_limit() {
        assert_eq!(idle_connections(10_000, 65_536), 10_000);
        assert_eq!(idle_connections(10_000, 20_000), 9_872);
        assert_eq!(idle_connections(10_000, 100), 0);
    }
}
