//! The `grpc-timeout` header and the deadline a route's
//! `max_stream_duration` gives a stream.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use legate_config::model::MaxStreamDuration;

pub static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// A `grpc-timeout` value that does not follow the gRPC protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid grpc-timeout {value:?}: expected 1 to 8 digits and a unit H, M, S, m, u or n")]
pub struct InvalidTimeout {
    pub value: String,
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit.
pub fn parse(value: &HeaderValue) -> Result<Duration, InvalidTimeout> {
    let invalid = || InvalidTimeout { value: String::from_utf8_lossy(value.as_bytes()).into_owned() };
    let bytes = value.as_bytes();
    let Some((&unit, digits)) = bytes.split_last() else { return Err(invalid()) };
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    let amount = digits.iter().fold(0u64, |total, digit| total * 10 + u64::from(digit - b'0'));
    match unit {
        b'H' => Ok(Duration::from_secs(amount * 3600)),
        b'M' => Ok(Duration::from_secs(amount * 60)),
        b'S' => Ok(Duration::from_secs(amount)),
        b'm' => Ok(Duration::from_millis(amount)),
        b'u' => Ok(Duration::from_micros(amount)),
        b'n' => Ok(Duration::from_nanos(amount)),
        _ => Err(invalid()),
    }
}

/// Formats a duration as a `grpc-timeout` value, in the finest unit whose
/// amount fits in 8 digits, rounding down so the upstream never gets more
/// time than is left.
pub fn format(duration: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let candidates = [
        (duration.as_nanos(), 'n'),
        (duration.as_micros(), 'u'),
        (duration.as_millis(), 'm'),
        (u128::from(duration.as_secs()), 'S'),
        (u128::from(duration.as_secs() / 60), 'M'),
        (u128::from(duration.as_secs() / 3600), 'H'),
    ];
    let (amount, unit) = candidates.into_iter().find(|(amount, _)| *amount <= MAX).unwrap_or((MAX, 'H'));
    // Digits and an ASCII letter are always a valid header value.
    HeaderValue::from_str(&format!("{amount}{unit}")).unwrap_or_else(|_| HeaderValue::from_static("0n"))
}

/// Computes a stream's deadline from the route's `max_stream_duration` and,
/// for gRPC requests, the `grpc-timeout` header, as Envoy does. When the
/// header sets the deadline, it is rewritten to the time left.
pub fn stream_deadline(
    limits: &MaxStreamDuration,
    headers: &mut HeaderMap,
    is_grpc: bool,
    now: Instant,
) -> Result<Option<Instant>, InvalidTimeout> {
    let header_timeout = match headers.get(&GRPC_TIMEOUT) {
        Some(value) if is_grpc => Some(parse(value)?),
        _ => None,
    };
    let from_header = match (limits.grpc_timeout_header_max, header_timeout) {
        (Some(max), Some(timeout)) => {
            let capped = if max.is_zero() { timeout } else { timeout.min(max) };
            Some(capped.saturating_sub(limits.grpc_timeout_header_offset))
        }
        _ => None,
    };
    let Some(timeout) = from_header.or(limits.max_stream_duration) else {
        return Ok(None);
    };
    if from_header.is_some() {
        headers.insert(GRPC_TIMEOUT.clone(), format(timeout));
    }
    Ok(Some(now + timeout))
}

/// Checks a `grpc-timeout` header on a route without `max_stream_duration`,
/// where it is passed on unchanged.
pub fn check(headers: &HeaderMap) -> Result<(), InvalidTimeout> {
    match headers.get(&GRPC_TIMEOUT) {
        Some(value) => parse(value).map(|_| ()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &'static str) -> Result<Duration, InvalidTimeout> {
        parse(&HeaderValue::from_static(text))
    }

    #[test]
    fn timeout_units_parse() {
        assert_eq!(parsed("200m"), Ok(Duration::from_millis(200)));
        assert_eq!(parsed("1H"), Ok(Duration::from_secs(3600)));
        assert_eq!(parsed("3M"), Ok(Duration::from_secs(180)));
        assert_eq!(parsed("100S"), Ok(Duration::from_secs(100)));
        assert_eq!(parsed("5u"), Ok(Duration::from_micros(5)));
        assert_eq!(parsed("99999999n"), Ok(Duration::from_nanos(99_999_999)));
    }

    #[test]
    fn invalid_timeouts_rejected() {
        for text in ["", "m", "123456789m", "10", "10s", "1.5S", "-1S", " 1S"] {
            assert!(parse(&HeaderValue::from_str(text).unwrap()).is_err(), "{text:?} must be rejected");
        }
    }

    #[test]
    fn timeout_format_rounds_down() {
        assert_eq!(format(Duration::from_millis(199)), "199000u", "at most 8 digits");
        assert_eq!(format(Duration::from_secs(30)), "30000000u");
        assert_eq!(format(Duration::from_secs(1_000_000)), "1000000S");
        assert_eq!(parse(&format(Duration::from_nanos(123_456_789_123))).unwrap(), Duration::from_millis(123_456));
    }

    #[test]
    fn header_deadline_is_capped() {
        let limits = MaxStreamDuration {
            max_stream_duration: None,
            grpc_timeout_header_max: Some(Duration::from_secs(10)),
            grpc_timeout_header_offset: Duration::from_secs(1),
        };
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT.clone(), HeaderValue::from_static("100S"));
        let now = Instant::now();
        let deadline = stream_deadline(&limits, &mut headers, true, now).unwrap();
        assert_eq!(deadline, Some(now + Duration::from_secs(9)));
        assert_eq!(headers[&GRPC_TIMEOUT], "9000000u");
    }

    #[test]
    fn header_ignored_without_max() {
        let limits = MaxStreamDuration { max_stream_duration: Some(Duration::from_secs(5)), ..Default::default() };
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT.clone(), HeaderValue::from_static("1S"));
        let now = Instant::now();
        assert_eq!(stream_deadline(&limits, &mut headers, true, now).unwrap(), Some(now + Duration::from_secs(5)));
        assert_eq!(headers[&GRPC_TIMEOUT], "1S");
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn formatted_timeouts_parse_back_no_longer(nanos in any::<u64>()) {
                let duration = Duration::from_nanos(nanos);
                let parsed = parse(&format(duration)).unwrap();
                prop_assert!(parsed <= duration);
                prop_assert!(duration - parsed < duration / 99_999 + Duration::from_nanos(1), "{:?} became {:?}", duration, parsed);
            }

            #[test]
            fn any_header_value_parses_or_fails(bytes in prop::collection::vec(any::<u8>(), 0..16)) {
                if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                    let _ = parse(&value);
                }
            }
        }
    }
}
