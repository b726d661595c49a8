//! Scenario 9: config changes. First, the time from `legate apply` of
//! 10,000 routes and clusters to the first request that uses them. Then
//! latency at a steady fixed rate while Legate gets one push per second
//! from its control plane, against nginx (`SIGHUP`) and HAProxy
//! (master-worker `SIGUSR2`) reloading once per second under the same load.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::http1::{half_of_slowest_proxy, summarize, Runs};
use super::Scenario;
use crate::bench::Bench;
use crate::control_plane::{ControlPlane, Resources};
use crate::http_client::Connection;
use crate::load::{self, FixedRate};
use crate::peers::{self, Layout, Protocol, Target};
use crate::process::{self, Pinned};
use crate::report::metric::{format_value, Better, Metric};
use crate::report::{Goal, Plot, Section};
use crate::upstream::EchoUpstream;

pub struct ConfigChange;

pub const NUMBER: u8 = 9;
/// Maximum time from apply to the first request through a new route.
const APPLY_GOAL: Duration = Duration::from_millis(200);
/// Legate's p99.9 bump during pushes may be at most this multiple of the
/// smallest bump a peer shows during reloads.
const BUMP_GOAL: f64 = 0.5;
/// Time between two pushes or reloads.
const PUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Maximum wait for a pushed route to return 200 before the run fails.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two probes of the new route, so the probes leave the
/// proxy's core to the config update.
const PROBE_PAUSE: Duration = Duration::from_millis(1);

/// One apply of the large config.
struct ApplyRun {
    /// From starting `legate apply` to the first 200 through the last new route.
    first_request: Duration,
    /// How long `legate apply` took until the control plane stored the change.
    apply_command: Duration,
}

/// Fixed-rate latency of one target without and with config changes.
struct SwapRun {
    steady: FixedRate,
    changing: FixedRate,
    pushes: usize,
}

impl SwapRun {
    fn p999_bump_us(&self) -> f64 {
        self.changing.p999_us as f64 - self.steady.p999_us as f64
    }
}

impl Scenario for ConfigChange {
    fn number(&self) -> u8 {
        NUMBER
    }

    fn title(&self) -> &'static str {
        "Config change: 10,000 routes and clusters applied, and one change per second under load"
    }

    fn run(&self, bench: &mut Bench) -> anyhow::Result<Section> {
        let rate = half_of_slowest_proxy(bench.saturation()?)?;
        bench.stop_lab();
        let applies = measure_applies(bench)?;
        let (swaps, per_connection_rate) = measure_swaps(bench, rate)?;
        let settings = &bench.settings;

        let mut section = Section::new(
            self,
            format!(
                "Apply: a Legate proxy (one worker) takes its config over ADS from `legate control-plane`, and \
                 `legate apply` runs on the same core, as nginx's and HAProxy's master processes do, so the load \
                 core carries the same work for every proxy. `legate apply` sends {} clusters, each with a route `/svc-N/`, in one change; the \
                 time runs from starting `legate apply` until a GET to the last new route returns 200 (probes \
                 every {PROBE_PAUSE:?} on a keep-alive connection). Under load: h2load sends {} requests per \
                 second in total over {} HTTP/1.1 connections (half the slowest proxy's saturation rate) for \
                 {:?} without changes, then {:?} while each proxy, configured with {} extra routes and clusters, \
                 changes config every {PUSH_INTERVAL:?}: Legate gets a `legate apply` that changes the catch-all \
                 route's timeout, nginx a `SIGHUP` (reload), HAProxy in master-worker mode a `SIGUSR2` (reload). \
                 The bump is p99.9 with changes minus p99.9 without.",
                settings.config_change_scale,
                per_connection_rate * settings.connections as u64,
                settings.connections,
                settings.fixed_rate_duration,
                settings.fixed_rate_duration,
                settings.scale,
            ),
        );
        let mut first_request = Metric::new("Apply of 10,000 routes and clusters to the first request through them", "ms", Better::Lower);
        first_request.insert(Target::Legate, summarize(&applies, |run| run.first_request.as_secs_f64() * 1e3));
        let mut apply_command = Metric::new("`legate apply` until the control plane stored the change", "ms", Better::Lower);
        apply_command.insert(Target::Legate, summarize(&applies, |run| run.apply_command.as_secs_f64() * 1e3));
        let mut propagation = Metric::new("From the control plane's response to the first request (0 when the request came first)", "ms", Better::Lower);
        propagation.insert(Target::Legate, summarize(&applies, |run| run.first_request.saturating_sub(run.apply_command).as_secs_f64() * 1e3));

        let mut steady = Metric::new("p99.9 without changes", "us", Better::Lower);
        let mut changing = Metric::new("p99.9 with a change per second", "us", Better::Lower);
        let mut bump = Metric::new("p99.9 bump from the changes", "us", Better::Lower);
        let mut failed = Metric::new("Failed requests during the changes", "requests", Better::Lower);
        for (target, runs) in &swaps {
            steady.insert(*target, summarize(runs, |run| run.steady.p999_us as f64));
            changing.insert(*target, summarize(runs, |run| run.changing.p999_us as f64));
            bump.insert(*target, summarize(runs, SwapRun::p999_bump_us));
            failed.insert(*target, summarize(runs, |run| run.changing.failed as f64));
        }
        section.goals.push(apply_goal(&first_request, settings.config_change_scale));
        section.goals.push(failed_goal(&swaps));
        section.goals.push(bump_goal(&bump));
        section.notes.extend(push_notes(&swaps));
        section.tables.extend([first_request.table(), apply_command.table(), propagation.table(), steady.table(), changing.table(), bump.table(), failed.table()]);
        section.plots.push(Plot {
            file_name: "config_change_p999.svg".into(),
            title: "p99.9 latency without and with a config change per second".into(),
            unit: "microseconds".into(),
            series: vec!["without changes".into(), "with changes".into()],
            groups: changing
                .values
                .iter()
                .map(|(target, summary)| (target.name().to_string(), vec![steady.values.get(target).copied(), Some(*summary)]))
                .collect(),
        });
        Ok(section)
    }
}

fn measure_applies(bench: &Bench) -> anyhow::Result<Vec<ApplyRun>> {
    let mut runs = Vec::new();
    for round in 0..bench.settings.runs {
        let dir = bench.work_dir.join(format!("config-change/apply-{round}"));
        let run = measure_apply(bench, &dir)?;
        eprintln!(
            "  round {round} legate   first request after {:.1} ms, legate apply took {:.1} ms",
            run.first_request.as_secs_f64() * 1e3,
            run.apply_command.as_secs_f64() * 1e3
        );
        runs.push(run);
    }
    Ok(runs)
}

/// Starts a control plane and a proxy with a small config, then applies
/// the large one and probes its last route until it returns 200.
fn measure_apply(bench: &Bench, dir: &Path) -> anyhow::Result<ApplyRun> {
    let upstream = EchoUpstream::start(bench.settings.body_bytes, dir_created(dir)?)?;
    let control_plane = ControlPlane::start(&bench.legate_bin, dir)?;
    // The probe of the new route must not match the catch-all route.
    let small = Resources {
        listen_port: process::free_port()?,
        upstream_port: upstream.port,
        scale: 0,
        route_timeout_seconds: 15,
        catch_all_prefix: "/echo/",
    };
    let (_proxy, port) = start_proxy_with(&control_plane, &small, dir)?;

    let scale = bench.settings.config_change_scale;
    let large = control_plane.write_resources("resources-large.yaml", &Resources { scale, ..small })?;
    let probe = format!("/svc-{}/", scale - 1);
    let mut connection = Connection::open(port)?;
    std::thread::scope(|scope| {
        let started = Instant::now();
        let apply = scope.spawn(|| control_plane.apply(&large));
        let first_request = wait_for_route(&mut connection, port, &probe, started);
        let apply_command = apply.join().map_err(|_| anyhow::anyhow!("the legate apply thread panicked"))??;
        Ok(ApplyRun { first_request: first_request?, apply_command })
    })
}

fn dir_created(dir: &Path) -> anyhow::Result<&Path> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    Ok(dir)
}

/// Applies `resources`, starts a proxy on the control plane and waits
/// until it forwards a request. Returns the proxy and its listener port.
fn start_proxy_with(control_plane: &ControlPlane, resources: &Resources, dir: &Path) -> anyhow::Result<(Pinned, u16)> {
    control_plane.apply(&control_plane.write_resources("resources-small.yaml", resources)?)?;
    let mut proxy = control_plane.start_proxy(dir)?;
    process::wait_for_port(resources.listen_port, Duration::from_secs(10))
        .with_context(|| format!("the Legate proxy got no listener from the control plane; see {}", dir.display()))?;
    proxy.ensure_running()?;
    let path = resources.catch_all_prefix;
    let reply = Connection::open(resources.listen_port)?.get(path)?;
    if reply.status != 200 {
        anyhow::bail!("Legate returned {} to GET {path} before the change, expected 200 from the echo upstream", reply.status);
    }
    Ok((proxy, resources.listen_port))
}

/// Sends GET `path` until it returns 200, reconnecting when the proxy
/// closes the connection, and returns the time since `started`.
fn wait_for_route(connection: &mut Connection, port: u16, path: &str, started: Instant) -> anyhow::Result<Duration> {
    loop {
        match connection.get(path) {
            Ok(reply) if reply.status == 200 => return Ok(started.elapsed()),
            Ok(_) => {}
            Err(_) => *connection = Connection::open(port)?,
        }
        if started.elapsed() > APPLY_TIMEOUT {
            anyhow::bail!("GET {path} still failed {APPLY_TIMEOUT:?} after the apply started");
        }
        std::thread::sleep(PROBE_PAUSE);
    }
}

/// A proxy that changes config on request, and how.
struct Changing {
    target: Target,
    port: u16,
    process: Pinned,
    /// Legate's control plane and the two resources files pushed in turn.
    control_plane: Option<(ControlPlane, [std::path::PathBuf; 2])>,
}

impl Changing {
    /// Makes the change number `index`.
    fn change(&self, index: usize) -> anyhow::Result<()> {
        let reload = match (&self.control_plane, self.target) {
            (Some((control_plane, files)), _) => return control_plane.apply(&files[index % 2]).map(|_| ()),
            (None, Target::Nginx) => libc::SIGHUP,
            (None, Target::Haproxy) => libc::SIGUSR2,
            (None, target) => anyhow::bail!("{} has no way to change config", target.name()),
        };
        process::signal(self.process.pid(), reload);
        Ok(())
    }
}

fn start_changing(bench: &Bench, target: Target, upstream_port: u16, dir: &Path) -> anyhow::Result<Changing> {
    let scale = bench.settings.scale;
    if target != Target::Legate {
        let layout = Layout { protocol: Protocol::Http1, upstream_port, scale };
        let proxy = peers::start_reloadable(target, layout, &bench.tools, &bench.legate_bin, dir)?;
        return Ok(Changing { target, port: proxy.port, process: proxy.process, control_plane: None });
    }
    let legate_dir = dir.join("legate-control-plane");
    let control_plane = ControlPlane::start(&bench.legate_bin, &legate_dir)?;
    let base = Resources { listen_port: process::free_port()?, upstream_port, scale, route_timeout_seconds: 15, catch_all_prefix: "/" };
    let (process, port) = start_proxy_with(&control_plane, &base, &legate_dir)?;
    let files = [
        control_plane.write_resources("resources-a.yaml", &Resources { route_timeout_seconds: 16, ..base })?,
        control_plane.write_resources("resources-b.yaml", &base)?,
    ];
    Ok(Changing { target, port, process, control_plane: Some((control_plane, files)) })
}

fn measure_swaps(bench: &Bench, total_rate: f64) -> anyhow::Result<(Runs<SwapRun>, u64)> {
    let settings = &bench.settings;
    let per_connection_rate = ((total_rate / settings.connections as f64).floor() as u64).max(1);
    let dir = bench.work_dir.join("config-change/under-load");
    let upstream = EchoUpstream::start(settings.body_bytes, dir_created(&dir)?)?;
    let mut proxies = Target::PROXIES.iter().map(|&target| start_changing(bench, target, upstream.port, &dir)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut runs = Runs::<SwapRun>::new();
    for round in 0..settings.runs {
        for proxy in &mut proxies {
            let name = proxy.target.name();
            load::wrk(&bench.tools.wrk, proxy.port, settings.connections, settings.warm_up)?;
            let fixed_rate = |suffix: &str| {
                let log_file = load::log_path(&dir, &format!("{name}-{suffix}"), round);
                load::h2load_fixed_rate(&bench.tools.h2load, proxy.port, settings.connections, per_connection_rate, settings.fixed_rate_duration, &log_file)
            };
            let steady = fixed_rate("steady")?;
            let (changing, pushes) = while_changing(proxy, || fixed_rate("changing"))?;
            proxy.process.ensure_running()?;
            eprintln!(
                "  round {round} {name:8} p99.9 {} us steady, {} us with {pushes} changes, {} failed",
                steady.p999_us, changing.p999_us, changing.failed
            );
            runs.entry(proxy.target).or_default().push(SwapRun { steady, changing, pushes });
        }
    }
    Ok((runs, per_connection_rate))
}

/// Runs `load` while another thread changes `proxy`'s config every
/// `PUSH_INTERVAL`, and returns the load's result and the changes made.
fn while_changing(proxy: &Changing, load: impl FnOnce() -> anyhow::Result<FixedRate>) -> anyhow::Result<(FixedRate, usize)> {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let changer = scope.spawn(|| -> anyhow::Result<usize> {
            let mut changes = 0;
            let mut next = Instant::now() + PUSH_INTERVAL / 2;
            while !done.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    proxy.change(changes)?;
                    changes += 1;
                    next += PUSH_INTERVAL;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(changes)
        });
        let result = load();
        done.store(true, Ordering::Relaxed);
        let changes = changer.join().map_err(|_| anyhow::anyhow!("the config change thread panicked"))??;
        Ok((result?, changes))
    })
}

fn apply_goal(first_request: &Metric, scale: usize) -> Goal {
    let legate = first_request.median(Target::Legate);
    Goal {
        goal: format!("{scale} routes and clusters applied within {} ms", APPLY_GOAL.as_millis()),
        measured: legate.map_or("-".to_string(), |ms| format!("{} ms", format_value(ms))),
        met: legate.is_some_and(|ms| ms <= APPLY_GOAL.as_secs_f64() * 1e3),
    }
}

fn failed_goal(swaps: &Runs<SwapRun>) -> Goal {
    let failed: Option<u64> = swaps.get(&Target::Legate).map(|runs| runs.iter().map(|run| run.changing.failed).sum());
    Goal {
        goal: "zero failed requests during config pushes".into(),
        measured: failed.map_or("-".to_string(), |failed| format!("{failed} failed")),
        met: failed == Some(0),
    }
}

fn bump_goal(bump: &Metric) -> Goal {
    let legate = bump.median(Target::Legate);
    let best = bump.best_peer();
    let measured = match (legate, best) {
        (Some(legate), Some((peer, best))) => format!("legate +{} us, {} +{} us", format_value(legate), peer.name(), format_value(best)),
        _ => "-".to_string(),
    };
    Goal {
        goal: format!("p99.9 bump during pushes <= {BUMP_GOAL}x the peers' bump during reloads"),
        measured,
        met: legate.zip(best).is_some_and(|(legate, (_, best))| legate <= BUMP_GOAL * best),
    }
}

/// Flags runs in which fewer changes were made than the load's duration
/// allows, which happens when a push or reload takes longer than a second.
fn push_notes(swaps: &Runs<SwapRun>) -> Vec<String> {
    swaps
        .iter()
        .filter_map(|(target, runs)| {
            let fewest = runs.iter().map(|run| run.pushes).min()?;
            (fewest == 0).then(|| format!("{} made no config change in at least one run.", target.name()))
        })
        .collect()
}
