//! Parsers from the text of one setting to its typed value. Each returns a
//! message that says what is allowed; [`Parser`] attaches the setting's name
//! and source and keeps going.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Layers, Problem, Source};

/// Which response statuses count as success.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SuccessCodes {
    /// Exactly 200, as Elastic Beanstalk's daemon.
    #[default]
    Only200,
    /// Any status from 200 to 299.
    Any2xx,
}

impl SuccessCodes {
    pub fn is_success(self, status: u16) -> bool {
        match self {
            SuccessCodes::Only200 => status == 200,
            SuccessCodes::Any2xx => (200..300).contains(&status),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How long a failed message waits before it is visible again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetryBackoff {
    /// Every failure waits `error_visibility_timeout`, as EB.
    #[default]
    Fixed,
    /// Failure on receive n waits `error_visibility_timeout × 2^(n−1)`,
    /// capped at `max_error_visibility`.
    Exponential,
}

/// What the periodic-task table (`cron_table`) holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CronTableMode {
    /// sqsd's own records.
    #[default]
    Standard,
    /// Elastic Beanstalk's leader registry (`registry_table` of EB's file).
    Eb,
}

/// Collects typed values and every problem met on the way.
pub(super) struct Parser<'a> {
    layers: &'a Layers,
    problems: Vec<Problem>,
}

impl<'a> Parser<'a> {
    pub fn new(layers: &'a Layers) -> Self {
        Parser {
            layers,
            problems: Vec::new(),
        }
    }

    /// A setting that has a default.
    pub fn field<T: Default>(&mut self, key: &str, f: impl Fn(&str) -> Result<T, String>) -> T {
        self.field_or(key, f, T::default())
    }

    pub fn field_or<T>(&mut self, key: &str, f: impl Fn(&str) -> Result<T, String>, or: T) -> T {
        self.optional(key, f).unwrap_or(or)
    }

    /// A setting that must be given.
    pub fn required<T: Default>(&mut self, key: &str, f: impl Fn(&str) -> Result<T, String>) -> T {
        if self.layers.get(key).is_none() {
            let spec = super::spec(key).expect("required options are in the table");
            self.problems.push(Problem {
                setting: key.into(),
                source: Source::Default,
                message: format!(
                    "is required: give `{key}` in the file, {} or --{}",
                    spec.env, spec.flag
                ),
            });
        }
        self.field(key, f)
    }

    /// A setting without a default: `None` when not given.
    pub fn optional<T>(&mut self, key: &str, f: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let (text, source) = self.layers.get(key)?;
        match f(text.trim()) {
            Ok(v) => Some(v),
            Err(message) => {
                self.problems.push(Problem {
                    setting: key.into(),
                    source: source.clone(),
                    message: format!("{} {message}", shown(text)),
                });
                None
            }
        }
    }

    /// Where a setting's value came from, if it was set at any layer.
    pub fn source(&self, key: &str) -> Option<Source> {
        self.layers.get(key).map(|(_, source)| source.clone())
    }

    /// Records a problem found outside the text of the setting itself (a
    /// file it names, a combination with another setting).
    pub fn problem(&mut self, setting: &str, source: Source, message: String) {
        self.problems.push(Problem {
            setting: setting.into(),
            source,
            message,
        });
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }
}

/// Plain seconds (`300`, `1.5`) or a number with a unit: `ms`, `s`, `m`, `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err("is not a duration (use seconds, or a number with ms, s, m or h)".into()),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| "is not a duration (use seconds, or a number with ms, s, m or h)")?;
    Duration::try_from_secs_f64(n * scale).map_err(|_| "is out of range".into())
}

/// A value as it is quoted in an error message: at most [`SHOWN_CHARS`]
/// characters, so that a huge value cannot flood the terminal or the log.
pub fn shown(text: &str) -> String {
    let text = &without_userinfo(text);
    match text.char_indices().nth(SHOWN_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

/// `scheme://user:password@host…` with the user part replaced by `***`, so
/// that a password given by mistake in a URL is never echoed.
pub fn without_userinfo(text: &str) -> String {
    if let Some(scheme_end) = text.find("://") {
        let rest = &text[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            return format!("{}***{}", &text[..scheme_end + 3], &rest[at..]);
        }
    }
    text.to_string()
}

/// Most characters of a value quoted in an error message.
pub const SHOWN_CHARS: usize = 80;

/// A duration between `min` and `max`; `range` says them in words.
pub fn duration_between(
    text: &str,
    min: Duration,
    max: Duration,
    range: &str,
) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < min || d > max {
        return Err(format!("is out of range: allowed {range}"));
    }
    Ok(d)
}

/// 0 (off), or an interval from 1 s to 1 h.
pub fn interval_or_off(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if !d.is_zero() && (d < Duration::from_secs(1) || d > Duration::from_secs(3600)) {
        return Err("is out of range: allowed 0 (never) or 1s to 1h".into());
    }
    Ok(d)
}

pub fn duration_in(text: &str, min_s: u64, max_s: u64) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(min_s) || d > Duration::from_secs(max_s) {
        return Err(format!("is out of range: allowed {min_s}s to {max_s}s"));
    }
    Ok(d)
}

pub fn whole_seconds(text: &str, min_s: u32, max_s: u32) -> Result<u32, String> {
    let d = duration_in(text, min_s.into(), max_s.into())?;
    if d.subsec_nanos() != 0 {
        return Err("must be a whole number of seconds (SQS counts in seconds)".into());
    }
    u32::try_from(d.as_secs()).map_err(|_| "is out of range".into())
}

pub fn linger(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d > Duration::from_secs(1) {
        return Err("is out of range: allowed 0 to 1s".into());
    }
    Ok(d)
}

pub fn integer<T: TryFrom<u64> + Default>(text: &str, min: u64, max: u64) -> Result<T, String> {
    let n: u64 = text
        .parse()
        .map_err(|_| format!("is not a whole number: allowed {min} to {max}"))?;
    if n < min || n > max {
        return Err(format!("is out of range: allowed {min} to {max}"));
    }
    T::try_from(n).map_err(|_| "is out of range".into())
}

fn http_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if url.host_str().unwrap_or("").is_empty() {
        return Err("must name a host".into());
    }
    Ok(url)
}

pub fn queue_url(text: &str) -> Result<String, String> {
    let url = http_url(text)?;
    let name = url
        .path()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    if name.is_empty() {
        return Err(
            "must end with the queue's name, e.g. https://sqs.REGION.amazonaws.com/ACCOUNT/NAME"
                .into(),
        );
    }
    Ok(text.to_string())
}

pub fn worker_url(text: &str) -> Result<String, String> {
    let url = http_url(text)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must be a base URL without ?query or #fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(text.trim_end_matches('/').to_string())
}

pub fn endpoint_url(text: &str) -> Result<String, String> {
    http_url(text).map(|_| text.to_string())
}

pub fn http_path(text: &str) -> Result<String, String> {
    crate::app::request::check_path(text)
        .map(str::to_string)
        .map_err(|e| format!("is not a path: {e}"))
}

pub fn mime_type(text: &str) -> Result<String, String> {
    let shaped = text
        .split_once('/')
        .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty());
    if !shaped || http::HeaderValue::from_str(text).is_err() {
        return Err("is not a media type such as application/json".into());
    }
    Ok(text.to_string())
}

/// A DynamoDB table name: 3-255 of `a-z A-Z 0-9 _ - .`.
pub fn table_name(text: &str) -> Result<String, String> {
    let ok_chars = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if (3..=255).contains(&text.len()) && ok_chars {
        Ok(text.to_string())
    } else {
        Err("is not a DynamoDB table name (3-255 letters, digits, _ - .)".into())
    }
}

pub fn boolean(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

pub fn region(text: &str) -> Result<String, String> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err("is not an AWS region name such as us-east-1".into());
    }
    Ok(text.to_string())
}

pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| "is not a listen address such as 127.0.0.1:9191".into())
}

pub fn success_codes(text: &str) -> Result<SuccessCodes, String> {
    match text {
        "200" => Ok(SuccessCodes::Only200),
        "2xx" | "2XX" => Ok(SuccessCodes::Any2xx),
        _ => Err("is not allowed: use 200 or 2xx".into()),
    }
}

pub fn log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("is not allowed: use text or json".into()),
    }
}

pub fn log_level(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_string())
        .map_err(|e| format!("is not a log level: {e}"))
}

pub fn retry_backoff(text: &str) -> Result<RetryBackoff, String> {
    match text {
        "fixed" => Ok(RetryBackoff::Fixed),
        "exponential" => Ok(RetryBackoff::Exponential),
        _ => Err("is not allowed: use fixed or exponential".into()),
    }
}

pub fn cron_table_mode(text: &str) -> Result<CronTableMode, String> {
    match text {
        "standard" => Ok(CronTableMode::Standard),
        "eb" => Ok(CronTableMode::Eb),
        _ => Err("is not allowed: use standard or eb".into()),
    }
}

/// A path on the application (joined to `worker_url`, whose base path is
/// kept) or an absolute URL elsewhere; the result is always absolute.
pub fn health_url(text: &str, worker_url: &str) -> Result<String, String> {
    if text.starts_with('/') {
        let path = crate::app::request::check_path(text)
            .map_err(|e| format!("is not a path on worker_url: {e}"))?;
        return Ok(format!("{worker_url}{path}"));
    }
    if !text.contains("://") {
        return Err(
            "must be a path on worker_url such as /health, or an absolute http:// or https:// URL"
                .into(),
        );
    }
    let url = http_url(text)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(text.to_string())
}

/// Comma-separated HTTP statuses, sorted and without repeats. Success and
/// 429 are refused: dead-lettering them would throw away messages the
/// application accepted or asked to have again later.
pub fn dead_letter_codes(text: &str) -> Result<Vec<u16>, String> {
    let mut codes = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let code = part
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| {
                format!(
                    "holds {}, which is not an HTTP status: allowed 100 to 599, comma-separated such as 400,410,422",
                    shown(part)
                )
            })?;
        if (200..300).contains(&code) {
            return Err(format!(
                "holds {code}, which would dead-letter messages the application accepted: allowed 100 to 599 except 2xx and 429"
            ));
        }
        if code == 429 {
            return Err("holds 429, which would dead-letter messages the application asked to retry: allowed 100 to 599 except 2xx and 429".into());
        }
        codes.push(code);
    }
    codes.sort_unstable();
    codes.dedup();
    Ok(codes)
}

/// Messages per second, 0 (unlimited) to 100000, decimals allowed.
pub fn max_rate(text: &str) -> Result<f64, String> {
    let rate = text
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite())
        .ok_or("is not a number: allowed 0 (unlimited) to 100000 messages per second")?;
    if !(0.0..=100_000.0).contains(&rate) {
        return Err("is out of range: allowed 0 (unlimited) to 100000 messages per second".into());
    }
    Ok(rate)
}
