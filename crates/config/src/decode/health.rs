//! OutlierDetection and HealthCheck decoding.

use std::time::Duration;

use legate_api::envoy::config::cluster::v3 as api;
use legate_api::envoy::config::core::v3 as core;

use super::duration;
use crate::error::Collector;
use crate::model::{HealthCheck, HealthCheckKind, OutlierDetection};

pub(crate) fn outlier_detection(proto: &api::OutlierDetection, errors: &mut Collector) -> OutlierDetection {
    let defaults = OutlierDetection::default();
    let percent = |value: Option<u32>, default: u32, field: &'static str, errors: &mut Collector| {
        let value = value.unwrap_or(default);
        if value > 100 {
            errors.at(field, |errors| errors.invalid(format!("{value} is over 100")));
        }
        value
    };
    let time = |value: Option<&prost_types::Duration>, default: Duration, field: &'static str, errors: &mut Collector| {
        value.and_then(|value| errors.at(field, |errors| duration(value, errors))).filter(|d| !d.is_zero()).unwrap_or(default)
    };

    let detection = OutlierDetection {
        consecutive_5xx: proto.consecutive_5xx.unwrap_or(defaults.consecutive_5xx),
        enforcing_consecutive_5xx: percent(proto.enforcing_consecutive_5xx, defaults.enforcing_consecutive_5xx, "enforcing_consecutive_5xx", errors),
        consecutive_gateway_failure: proto.consecutive_gateway_failure.unwrap_or(defaults.consecutive_gateway_failure),
        enforcing_consecutive_gateway_failure: percent(
            proto.enforcing_consecutive_gateway_failure,
            defaults.enforcing_consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure",
            errors,
        ),
        split_external_local_origin_errors: proto.split_external_local_origin_errors,
        consecutive_local_origin_failure: proto.consecutive_local_origin_failure.unwrap_or(defaults.consecutive_local_origin_failure),
        enforcing_consecutive_local_origin_failure: percent(
            proto.enforcing_consecutive_local_origin_failure,
            defaults.enforcing_consecutive_local_origin_failure,
            "enforcing_consecutive_local_origin_failure",
            errors,
        ),
        interval: time(proto.interval.as_ref(), defaults.interval, "interval", errors),
        base_ejection_time: time(proto.base_ejection_time.as_ref(), defaults.base_ejection_time, "base_ejection_time", errors),
        max_ejection_time: time(proto.max_ejection_time.as_ref(), defaults.max_ejection_time, "max_ejection_time", errors),
        max_ejection_percent: percent(proto.max_ejection_percent, defaults.max_ejection_percent, "max_ejection_percent", errors),
        enforcing_success_rate: percent(proto.enforcing_success_rate, defaults.enforcing_success_rate, "enforcing_success_rate", errors),
        success_rate_minimum_hosts: proto.success_rate_minimum_hosts.unwrap_or(defaults.success_rate_minimum_hosts),
        success_rate_request_volume: proto.success_rate_request_volume.unwrap_or(defaults.success_rate_request_volume),
        success_rate_stdev_factor: proto.success_rate_stdev_factor.unwrap_or(defaults.success_rate_stdev_factor),
        failure_percentage_threshold: percent(
            proto.failure_percentage_threshold,
            defaults.failure_percentage_threshold,
            "failure_percentage_threshold",
            errors,
        ),
        enforcing_failure_percentage: percent(
            proto.enforcing_failure_percentage,
            defaults.enforcing_failure_percentage,
            "enforcing_failure_percentage",
            errors,
        ),
        failure_percentage_minimum_hosts: proto.failure_percentage_minimum_hosts.unwrap_or(defaults.failure_percentage_minimum_hosts),
        failure_percentage_request_volume: proto.failure_percentage_request_volume.unwrap_or(defaults.failure_percentage_request_volume),
    };
    if detection.max_ejection_time < detection.base_ejection_time {
        errors.invalid("max_ejection_time must be at least base_ejection_time");
    }
    detection
}

pub(crate) fn health_check(proto: &core::HealthCheck, errors: &mut Collector) -> Option<HealthCheck> {
    use core::health_check::HealthChecker;

    let timeout = required_time(proto.timeout.as_ref(), "timeout", errors);
    let interval = required_time(proto.interval.as_ref(), "interval", errors);
    let explicit_jitter = proto.interval_jitter.as_ref().and_then(|value| errors.at("interval_jitter", |errors| duration(value, errors)));
    let unhealthy_threshold = proto.unhealthy_threshold.filter(|value| *value > 0);
    let healthy_threshold = proto.healthy_threshold.filter(|value| *value > 0);
    if unhealthy_threshold.is_none() {
        errors.missing("unhealthy_threshold");
    }
    if healthy_threshold.is_none() {
        errors.missing("healthy_threshold");
    }
    if proto.initial_jitter.is_some() {
        errors.ignored("initial_jitter");
    }

    let kind = match &proto.health_checker {
        Some(HealthChecker::HttpHealthCheck(http)) => errors.at("http_health_check", |errors| http_check(http, errors)),
        Some(HealthChecker::TcpHealthCheck(tcp)) => errors.at("tcp_health_check", |errors| tcp_check(tcp, errors)),
        Some(HealthChecker::GrpcHealthCheck(grpc)) => Some(HealthCheckKind::Grpc {
            service_name: grpc.service_name.clone(),
            authority: (!grpc.authority.is_empty()).then(|| grpc.authority.clone()),
        }),
        None => {
            errors.missing("http_health_check, tcp_health_check or grpc_health_check");
            None
        }
    };

    let interval = interval?;
    let percent_jitter = interval.mul_f64(f64::from(proto.interval_jitter_percent.min(100)) / 100.0);
    Some(HealthCheck {
        kind: kind?,
        timeout: timeout?,
        interval,
        interval_jitter: explicit_jitter.unwrap_or_default() + percent_jitter,
        unhealthy_threshold: unhealthy_threshold?,
        healthy_threshold: healthy_threshold?,
    })
}

fn required_time(value: Option<&prost_types::Duration>, field: &'static str, errors: &mut Collector) -> Option<Duration> {
    let Some(value) = value else {
        errors.missing(field);
        return None;
    };
    let value = errors.at(field, |errors| duration(value, errors))?;
    if value.is_zero() {
        errors.at(field, |errors| errors.invalid("must be greater than 0"));
        return None;
    }
    Some(value)
}

fn http_check(proto: &core::health_check::HttpHealthCheck, errors: &mut Collector) -> Option<HealthCheckKind> {
    if !proto.path.starts_with('/') {
        errors.at("path", |errors| errors.invalid(format!("path {:?} must start with '/'", proto.path)));
        return None;
    }
    let mut expected_statuses = Vec::new();
    for (index, range) in proto.expected_statuses.iter().enumerate() {
        let valid = (100..=600).contains(&range.start) && range.start < range.end && range.end <= 600;
        if valid {
            expected_statuses.push((range.start as u16, range.end as u16));
        } else {
            errors.at(format!("expected_statuses[{index}]"), |errors| {
                errors.invalid(format!("[{}, {}) is not a range of HTTP statuses", range.start, range.end))
            });
        }
    }
    if expected_statuses.is_empty() {
        expected_statuses.push((200, 201));
    }
    Some(HealthCheckKind::Http {
        host: (!proto.host.is_empty()).then(|| proto.host.clone()),
        path: proto.path.clone(),
        expected_statuses,
    })
}

/// Decodes a TCP check. Its payloads are hex text, as in Envoy
/// (`"50494E47"` is `PING`).
fn tcp_check(proto: &core::health_check::TcpHealthCheck, errors: &mut Collector) -> Option<HealthCheckKind> {
    use core::health_check::payload::Payload;

    let bytes = |payload: &core::health_check::Payload, field: String, errors: &mut Collector| {
        let Some(Payload::Text(text)) = &payload.payload else { return Some(Vec::new()) };
        let decoded = hex(text);
        if decoded.is_none() {
            errors.at(field, |errors| errors.invalid(format!("text {text:?} is not hex")));
        }
        decoded
    };
    let send = match &proto.send {
        Some(payload) => Some(bytes(payload, "send.text".into(), errors)?),
        None => None,
    };
    let mut receive = Vec::new();
    for (index, payload) in proto.receive.iter().enumerate() {
        receive.push(bytes(payload, format!("receive[{index}].text"), errors)?);
    }
    Some(HealthCheckKind::Tcp { send: send.filter(|bytes| !bytes.is_empty()), receive })
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok()).collect()
}
