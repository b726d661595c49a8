//! Access log decoding: sinks, formats with Envoy's command operators, and
//! filters. An operator Legate does not fill in is an error, so a format
//! never logs a silent `-` where the user expected a value.

use legate_api::envoy::config::accesslog::v3 as api;
use legate_api::envoy::config::core::v3 as core;
use legate_api::envoy::extensions::access_loggers::{file::v3 as file, stream::v3 as stream};
use legate_api::envoy::r#type::v3::fractional_percent::DenominatorType;

use super::decode_message;
use crate::error::Collector;
use crate::model::{AccessLog, Comparison, LogFilter, LogFormat, LogOperator, LogSink, LogToken, DEFAULT_FORMAT};

const FILE_TYPE: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT_TYPE: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR_TYPE: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

pub(crate) fn access_log(proto: &api::AccessLog, errors: &mut Collector) -> Option<AccessLog> {
    let Some(api::access_log::ConfigType::TypedConfig(any)) = &proto.config_type else {
        errors.missing("typed_config");
        return None;
    };
    let (sink, format) = if any.type_url.ends_with(FILE_TYPE) {
        let config = errors.at("typed_config", |errors| decode_message::<file::FileAccessLog>(&any.value, errors))?;
        if config.path.is_empty() {
            errors.at("typed_config", |errors| errors.missing("path"));
        }
        let format = config.access_log_format.map(|file::file_access_log::AccessLogFormat::LogFormat(format)| format);
        (LogSink::File(config.path), format)
    } else if any.type_url.ends_with(STDOUT_TYPE) {
        let config = errors.at("typed_config", |errors| decode_message::<stream::StdoutAccessLog>(&any.value, errors))?;
        (LogSink::Stdout, config.access_log_format.map(|stream::stdout_access_log::AccessLogFormat::LogFormat(format)| format))
    } else if any.type_url.ends_with(STDERR_TYPE) {
        let config = errors.at("typed_config", |errors| decode_message::<stream::StderrAccessLog>(&any.value, errors))?;
        (LogSink::Stderr, config.access_log_format.map(|stream::stderr_access_log::AccessLogFormat::LogFormat(format)| format))
    } else {
        errors.unsupported(format!("access logger {:?} ({}) is not supported by Legate", proto.name, any.type_url));
        return None;
    };

    let format = errors.at("typed_config.log_format", |errors| log_format(format.as_ref(), errors))?;
    let filter = proto.filter.as_ref().and_then(|filter| errors.at("filter", |errors| log_filter(filter, errors)));
    if proto.filter.is_some() && filter.is_none() {
        return None;
    }
    Some(AccessLog { sink, format, filter })
}

fn log_format(proto: Option<&core::SubstitutionFormatString>, errors: &mut Collector) -> Option<LogFormat> {
    use core::substitution_format_string::Format;

    let Some(proto) = proto else {
        return Some(LogFormat::Text(parse_tokens(DEFAULT_FORMAT, errors)?.into()));
    };
    match &proto.format {
        None => Some(LogFormat::Text(parse_tokens(DEFAULT_FORMAT, errors)?.into())),
        Some(Format::TextFormat(text)) => Some(LogFormat::Text(parse_tokens(text, errors)?.into())),
        Some(Format::TextFormatSource(source)) => match &source.specifier {
            Some(core::data_source::Specifier::InlineString(text)) => Some(LogFormat::Text(parse_tokens(text, errors)?.into())),
            Some(core::data_source::Specifier::InlineBytes(bytes)) => {
                let text = String::from_utf8_lossy(bytes);
                Some(LogFormat::Text(parse_tokens(&text, errors)?.into()))
            }
            Some(core::data_source::Specifier::Filename(_)) => {
                errors.at("text_format_source.filename", |errors| {
                    errors.unsupported("a log format from a file is not supported; use inline_string")
                });
                None
            }
            None => {
                errors.missing("text_format_source.inline_string");
                None
            }
        },
        Some(Format::JsonFormat(object)) => {
            let mut fields = Vec::new();
            for (key, value) in &object.fields {
                let Some(prost_types::value::Kind::StringValue(text)) = &value.kind else {
                    errors.at(format!("json_format.{key}"), |errors| errors.unsupported("only string values are supported in json_format"));
                    continue;
                };
                if let Some(tokens) = errors.at(format!("json_format.{key}"), |errors| parse_tokens(text, errors)) {
                    fields.push((key.clone(), tokens));
                }
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Some(LogFormat::Json { fields: fields.into(), omit_empty: proto.omit_empty_values })
        }
    }
}

/// Splits a format into literals and `%OPERATOR%` tokens.
pub(crate) fn parse_tokens(text: &str, errors: &mut Collector) -> Option<Vec<LogToken>> {
    let mut tokens = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        if start > 0 {
            tokens.push(LogToken::Literal(rest[..start].to_string()));
        }
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else {
            errors.invalid(format!("unterminated command operator in {text:?}"));
            return None;
        };
        tokens.push(LogToken::Operator(operator(&after[..end], errors)?));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        tokens.push(LogToken::Literal(rest.to_string()));
    }
    Some(tokens)
}

fn operator(text: &str, errors: &mut Collector) -> Option<LogOperator> {
    let simple = match text {
        "START_TIME" => Some(LogOperator::StartTime),
        "RESPONSE_CODE" => Some(LogOperator::ResponseCode),
        "RESPONSE_FLAGS" => Some(LogOperator::ResponseFlags),
        "DURATION" => Some(LogOperator::Duration),
        "BYTES_RECEIVED" => Some(LogOperator::BytesReceived),
        "BYTES_SENT" => Some(LogOperator::BytesSent),
        "PROTOCOL" => Some(LogOperator::Protocol),
        "UPSTREAM_HOST" => Some(LogOperator::UpstreamHost),
        "UPSTREAM_CLUSTER" => Some(LogOperator::UpstreamCluster),
        "DOWNSTREAM_REMOTE_ADDRESS" => Some(LogOperator::DownstreamRemoteAddress),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => Some(LogOperator::DownstreamRemoteAddressWithoutPort),
        "ROUTE_NAME" => Some(LogOperator::RouteName),
        _ => None,
    };
    if simple.is_some() {
        return simple;
    }

    let header = |prefix: &str| -> Option<(String, Option<String>, Option<usize>)> {
        let inner = text.strip_prefix(prefix)?;
        let (names, max_length) = match inner.split_once("):") {
            Some((names, length)) => (names, Some(length)),
            None => (inner.strip_suffix(')')?, None),
        };
        let max_length = match max_length {
            Some(length) => Some(length.parse::<usize>().ok()?),
            None => None,
        };
        let (name, fallback) = match names.split_once('?') {
            Some((name, fallback)) => (name.to_ascii_lowercase(), Some(fallback.to_ascii_lowercase())),
            None => (names.to_ascii_lowercase(), None),
        };
        (!name.is_empty()).then_some((name, fallback, max_length))
    };
    if let Some((name, fallback, max_length)) = header("REQ(") {
        return Some(LogOperator::RequestHeader { name, fallback, max_length });
    }
    if let Some((name, fallback, max_length)) = header("RESP(") {
        return Some(LogOperator::ResponseHeader { name, fallback, max_length });
    }
    errors.unsupported(format!("command operator %{text}% is not supported by Legate"));
    None
}

fn log_filter(proto: &api::AccessLogFilter, errors: &mut Collector) -> Option<LogFilter> {
    use api::access_log_filter::FilterSpecifier;

    match &proto.filter_specifier {
        Some(FilterSpecifier::StatusCodeFilter(filter)) => {
            let comparison = filter.comparison.clone().unwrap_or_default();
            let op = match api::comparison_filter::Op::try_from(comparison.op) {
                Ok(api::comparison_filter::Op::Eq) => Comparison::Equal,
                Ok(api::comparison_filter::Op::Ge) => Comparison::AtLeast,
                Ok(api::comparison_filter::Op::Le) => Comparison::AtMost,
                Err(_) => {
                    errors.invalid(format!("comparison op {} is unknown", comparison.op));
                    return None;
                }
            };
            let value = comparison.value.unwrap_or_default();
            if !value.runtime_key.is_empty() {
                errors.ignored("status_code_filter.comparison.value.runtime_key");
            }
            Some(LogFilter::StatusCode { op, value: u16::try_from(value.default_value).unwrap_or(u16::MAX) })
        }
        Some(FilterSpecifier::RuntimeFilter(filter)) => {
            let percent = filter.percent_sampled.unwrap_or_default();
            let denominator = match DenominatorType::try_from(percent.denominator) {
                Ok(DenominatorType::Hundred) => 100.0,
                Ok(DenominatorType::TenThousand) => 10_000.0,
                Ok(DenominatorType::Million) => 1_000_000.0,
                Err(_) => {
                    errors.invalid(format!("denominator {} is unknown", percent.denominator));
                    return None;
                }
            };
            Some(LogFilter::Sample((f64::from(percent.numerator) / denominator).min(1.0)))
        }
        None => {
            errors.missing("status_code_filter or runtime_filter");
            None
        }
    }
}

