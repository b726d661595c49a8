//! Load generators, run on the load core: wrk for closed-loop saturation
//! throughput, h2load with `--rps` for latency at a fixed rate, and h2load
//! over h2c for gRPC unary calls.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::process::LOAD_CORE;
use crate::stats::percentile;

/// Result of one wrk run.
#[derive(Debug, Clone)]
pub struct Saturation {
    pub requests: u64,
    pub requests_per_second: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

/// Result of one h2load run at a fixed rate.
#[derive(Debug, Clone)]
pub struct FixedRate {
    pub succeeded: u64,
    pub failed: u64,
    pub achieved_per_second: f64,
    /// Latency percentiles of 2xx responses, in microseconds.
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
}

/// Runs wrk with one thread and `connections` keep-alive connections as
/// fast as the target responds.
pub fn wrk(wrk: &Path, port: u16, connections: usize, duration: Duration) -> anyhow::Result<Saturation> {
    let args = [
        "-t1".to_string(),
        format!("-c{connections}"),
        // wrk takes whole seconds only.
        format!("-d{}s", duration.as_secs().max(1)),
        format!("http://127.0.0.1:{port}/"),
    ];
    let output = run_pinned(wrk, &args)?;
    parse_wrk(&output).with_context(|| format!("failed to read wrk's output:\n{output}"))
}

fn parse_wrk(output: &str) -> anyhow::Result<Saturation> {
    let requests = output
        .lines()
        .find(|line| line.contains(" requests in "))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .context("no request count")?;
    let requests_per_second = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .context("no Requests/sec line")?;
    let non_success: u64 = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0);
    let socket_errors: u64 = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Socket errors:"))
        .map(|counts| counts.split(',').filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Ok(Saturation { requests, requests_per_second, errors: non_success + socket_errors })
}

/// Runs h2load over HTTP/1.1 with `connections` clients, each sending
/// `per_connection_rate` requests per second, and reads every request's
/// latency from its log file.
///
/// NOTE: h2load sends a request when its timer fires or, if the previous
/// one is still in flight, as soon as it ends, and it times a request from
/// when it was sent. Latency is therefore not corrected for coordinated
/// omission, which is why the rate is kept well below saturation.
pub fn h2load_fixed_rate(
    h2load: &Path,
    port: u16,
    connections: usize,
    per_connection_rate: u64,
    duration: Duration,
    log_file: &Path,
) -> anyhow::Result<FixedRate> {
    let args = [
        "--h1".to_string(),
        "-t1".to_string(),
        format!("-c{connections}"),
        format!("--rps={per_connection_rate}"),
        format!("-D{}", duration.as_secs().max(1)),
        format!("--log-file={}", log_file.display()),
        format!("http://127.0.0.1:{port}/"),
    ];
    let output = run_pinned(h2load, &args)?;
    fixed_rate_result(&output, duration, log_file)
}

/// Counts from h2load's output and latency percentiles from its log file.
fn fixed_rate_result(output: &str, duration: Duration, log_file: &Path) -> anyhow::Result<FixedRate> {
    let (succeeded, failed) = parse_h2load_counts(output).with_context(|| format!("failed to read h2load's output:\n{output}"))?;
    let mut latencies = read_h2load_log(log_file)?;
    latencies.sort_unstable();
    let missing = || anyhow::anyhow!("h2load logged no successful request in {}", log_file.display());
    Ok(FixedRate {
        succeeded,
        failed,
        achieved_per_second: succeeded as f64 / duration.as_secs_f64(),
        p50_us: percentile(&latencies, 0.50).ok_or_else(missing)?,
        p99_us: percentile(&latencies, 0.99).ok_or_else(missing)?,
        p999_us: percentile(&latencies, 0.999).ok_or_else(missing)?,
    })
}

/// A gRPC unary call as h2load sends it over HTTP/2 with prior knowledge
/// (h2c): the method's path, request headers as `name: value`, and a file
/// with the pre-encoded request body.
pub struct GrpcCall<'a> {
    pub path: &'a str,
    pub headers: Vec<String>,
    pub body_file: &'a Path,
}

/// Connections and streams in flight per connection for an h2load gRPC run.
#[derive(Debug, Clone, Copy)]
pub struct H2Shape {
    pub connections: usize,
    pub streams: usize,
}

fn h2load_grpc_args(port: u16, call: &GrpcCall, shape: H2Shape, duration: Duration) -> Vec<String> {
    let mut args = vec![
        "-t1".to_string(),
        format!("-c{}", shape.connections),
        format!("-m{}", shape.streams),
        format!("-D{}", duration.as_secs().max(1)),
        format!("--data={}", call.body_file.display()),
    ];
    args.extend(call.headers.iter().map(|header| format!("--header={header}")));
    args.push(format!("http://127.0.0.1:{port}{}", call.path));
    args
}

/// Runs h2load over h2c as fast as the target responds. A call counts as
/// succeeded on HTTP status 2xx: h2load does not read `grpc-status`, which the
/// harness checks once per target before measuring.
pub fn h2load_grpc_saturation(h2load: &Path, port: u16, call: &GrpcCall, shape: H2Shape, duration: Duration) -> anyhow::Result<Saturation> {
    let output = run_pinned(h2load, &h2load_grpc_args(port, call, shape, duration))?;
    let (succeeded, failed) = parse_h2load_counts(&output).with_context(|| format!("failed to read h2load's output:\n{output}"))?;
    Ok(Saturation { requests: succeeded, requests_per_second: succeeded as f64 / duration.as_secs_f64(), errors: failed })
}

/// Runs h2load over h2c with each connection sending `per_connection_rate`
/// calls per second, and reads every call's latency from its log file. The
/// coordinated-omission note of `h2load_fixed_rate` applies here too.
pub fn h2load_grpc_fixed_rate(
    h2load: &Path,
    port: u16,
    call: &GrpcCall,
    shape: H2Shape,
    per_connection_rate: u64,
    duration: Duration,
    log_file: &Path,
) -> anyhow::Result<FixedRate> {
    let mut args = h2load_grpc_args(port, call, shape, duration);
    let url = args.pop().expect("the URL is the last argument");
    args.push(format!("--rps={per_connection_rate}"));
    args.push(format!("--log-file={}", log_file.display()));
    args.push(url);
    let output = run_pinned(h2load, &args)?;
    fixed_rate_result(&output, duration, log_file)
}

/// Reads "requests: N total, N started, N done, N succeeded, N failed, ...".
fn parse_h2load_counts(output: &str) -> anyhow::Result<(u64, u64)> {
    let line = output.lines().find_map(|line| line.strip_prefix("requests:")).context("no requests line")?;
    let count = |label: &str| -> Option<u64> {
        line.split(',').find(|part| part.trim().ends_with(label))?.split_whitespace().next()?.parse().ok()
    };
    let succeeded = count("succeeded").context("no succeeded count")?;
    let failed = count("failed").context("no failed count")?;
    Ok((succeeded, failed))
}

/// Latencies in microseconds of the 2xx rows of an h2load log file (start
/// time, status, latency; tab-separated).
fn read_h2load_log(path: &Path) -> anyhow::Result<Vec<u64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut columns = line.split('\t');
            let _start = columns.next()?;
            let status: u16 = columns.next()?.trim().parse().ok()?;
            let latency: u64 = columns.next()?.trim().parse().ok()?;
            (200..300).contains(&status).then_some(latency)
        })
        .collect())
}

fn run_pinned(program: &Path, args: &[String]) -> anyhow::Result<String> {
    let output = Command::new("taskset")
        .arg("-c")
        .arg(LOAD_CORE.to_string())
        .arg(program)
        .args(args)
        .output()
        .with_context(|| format!("failed to run {}", program.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        anyhow::bail!("{} {} failed with {}:\n{text}", program.display(), args.join(" "), output.status);
    }
    Ok(text)
}

/// Path for an h2load log file inside `dir`.
pub fn log_path(dir: &Path, target: &str, run: usize) -> PathBuf {
    dir.join(format!("h2load-{target}-run{run}.tsv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_parsed() {
        let output = "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n  \
            20480 requests in 1.00s, 24.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  \
            Non-2xx or 3xx responses: 4\nRequests/sec:  20470.12\nTransfer/sec:     23.99MB\n";
        let result = parse_wrk(output).unwrap();
        assert_eq!(result.requests, 20480);
        assert_eq!(result.requests_per_second, 20470.12);
        assert_eq!(result.errors, 7);
    }

    #[test]
    fn h2load_grpc_arguments() {
        let body = Path::new("/tmp/call.bin");
        let call = GrpcCall { path: "/bench.Echo/Unary", headers: vec!["content-type: application/grpc".into()], body_file: body };
        let args = h2load_grpc_args(4000, &call, H2Shape { connections: 8, streams: 4 }, Duration::from_secs(3));
        assert_eq!(
            args,
            ["-t1", "-c8", "-m4", "-D3", "--data=/tmp/call.bin", "--header=content-type: application/grpc", "http://127.0.0.1:4000/bench.Echo/Unary"]
        );
    }

    #[test]
    fn h2load_counts_parsed() {
        let output = "finished in 2.00s, 500.00 req/s, 1MB/s\n\
            requests: 1000 total, 1000 started, 998 done, 997 succeeded, 3 failed, 0 errored, 0 timeout\n";
        assert_eq!(parse_h2load_counts(output).unwrap(), (997, 3));
    }
}
