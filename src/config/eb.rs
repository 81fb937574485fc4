//! Elastic Beanstalk's own daemon configuration (`eb_config`): the file EB
//! writes to `/etc/aws-sqsd.d/default.yaml` from the environment's
//! `aws:elasticbeanstalk:sqsd` settings, or what `get-config meta -k
//! sqsdconfig` prints (YAML, or JSON, which parses as YAML).
//!
//! This module turns that file into option texts for the layer just above
//! the defaults. Every key with a meaning for sqsd becomes its option; keys
//! that only tune EB's own daemon, and keys this version does not know, are
//! accepted and kept in a list that the daemon logs once at debug level, so
//! a newer EB platform cannot stop the daemon. A value that cannot be used
//! is a problem naming the key and the file.

use std::path::Path;

use super::limits::{read_yaml_mapping, FileError};
use super::options::*;
use super::parse::shown;
use super::{Problem, Source};

/// EB's keys that mean the sqsd option of the same name.
const SAME_NAME: &[&str] = &[
    QUEUE_URL,
    HTTP_PATH,
    MIME_TYPE,
    HTTP_CONNECTIONS,
    CONNECT_TIMEOUT,
    INACTIVITY_TIMEOUT,
    VISIBILITY_TIMEOUT,
    ERROR_VISIBILITY_TIMEOUT,
    RETENTION_PERIOD,
    DRAIN_TIMEOUT,
];

/// Longest key quoted in a message or in the list of ignored keys.
const KEY_CHARS: usize = 64;

/// Most ignored keys remembered (the rest are counted).
const MAX_IGNORED_LISTED: usize = 64;

/// What EB's file contributes to the layers.
#[derive(Debug, Default)]
pub(super) struct EbLayer {
    /// Option texts, each to be recorded with source `eb_config`.
    pub values: Vec<(&'static str, String)>,
    /// `healthcheck: TCP:<port>`.
    pub app_probe_port: Option<u16>,
    /// Keys accepted but without a meaning for sqsd (EB's tuning keys,
    /// `environment_name`, keys of newer platforms), each once.
    pub ignored: Vec<String>,
    /// Each problem with the option its key feeds, if any: a problem
    /// whose option a higher layer sets does not matter.
    pub problems: Vec<(Option<&'static str>, Problem)>,
}

/// Reads EB's file at `path` (named by `via`) within the bounds of sqsd's
/// own file, and maps it.
pub(super) fn read(path: &Path, via: &Source) -> EbLayer {
    let mut layer = EbLayer::default();
    let source = Source::EbConfig(path.to_path_buf());
    let map = match read_yaml_mapping(path) {
        Ok(Some(map)) => map,
        Ok(None) => return layer,
        Err(FileError::Unreadable(message)) => {
            layer.problem(EB_CONFIG, via, message);
            return layer;
        }
        Err(FileError::Content(message)) => {
            layer.problem(EB_CONFIG, &source, message);
            return layer;
        }
    };
    map_keys(&mut layer, &map, &source);
    layer
}

/// Maps a parsed file; `source` is `eb_config <path>`.
fn map_keys(layer: &mut EbLayer, map: &serde_yaml::Mapping, source: &Source) {
    let mut texts: Vec<(String, String)> = Vec::new();
    let mut ignored_count = 0usize;
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            layer.problem(
                EB_CONFIG,
                source,
                format!("holds a key that is not a string ({})", kind(k)),
            );
            continue;
        };
        if !has_meaning(key) {
            ignored_count += 1;
            if ignored_count <= MAX_IGNORED_LISTED {
                layer.ignored.push(short(key));
            }
            continue;
        }
        match v {
            // `key:` or `key: ~` leaves the option to the layers below.
            serde_yaml::Value::Null => {}
            serde_yaml::Value::String(s) => texts.push((key.to_string(), s.trim().to_string())),
            serde_yaml::Value::Number(n) => texts.push((key.to_string(), n.to_string())),
            serde_yaml::Value::Bool(b) => texts.push((key.to_string(), b.to_string())),
            other => layer.problem(
                key,
                source,
                format!("must be a single value, not {}", kind(other)),
            ),
        }
    }
    if ignored_count > MAX_IGNORED_LISTED {
        layer
            .ignored
            .push(format!("({} more)", ignored_count - MAX_IGNORED_LISTED));
    }
    let get = |name: &str| {
        texts
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let http_url = get("http_url");
    match application_base(http_url, get("http_port")) {
        Ok(Some(url)) => layer.values.push((WORKER_URL, url)),
        Ok(None) => {}
        Err((key, message)) => layer.problem(key, source, message),
    }
    let mut log_debug = false;
    for (key, text) in &texts {
        match key.as_str() {
            "http_url" | "http_port" => {}
            "healthcheck" => layer.healthcheck(text, http_url, source),
            "via_sns" => layer.values.push((SNS_UNWRAP, text.clone())),
            "registry_table" => layer.values.push((CRON_TABLE, text.clone())),
            "verbose" | "debug" => match super::parse::boolean(text) {
                Ok(on) => log_debug |= on,
                Err(message) => layer.problem(key, source, format!("{} {message}", shown(text))),
            },
            other => {
                if let Some(option) = SAME_NAME.iter().find(|k| **k == other) {
                    layer.values.push((option, text.clone()));
                }
            }
        }
    }
    if log_debug {
        layer.values.push((LOG_LEVEL, "debug".into()));
    }
}

/// Whether an EB key maps to something in sqsd.
fn has_meaning(key: &str) -> bool {
    SAME_NAME.contains(&key)
        || matches!(
            key,
            "http_url"
                | "http_port"
                | "healthcheck"
                | "via_sns"
                | "registry_table"
                | "verbose"
                | "debug"
        )
}

impl EbLayer {
    fn problem(&mut self, key: &str, source: &Source, message: String) {
        let feeds = match key {
            "http_url" | "http_port" => Some(WORKER_URL),
            "verbose" | "debug" => Some(LOG_LEVEL),
            other => SAME_NAME.iter().find(|k| **k == other).copied(),
        };
        self.problems.push((
            feeds,
            Problem {
                setting: short(key),
                source: source.clone(),
                message,
            },
        ));
    }

    /// `TCP:<port>` names the port the application is probed on;
    /// `HTTP:<port>/<path>` a URL on the application's host to GET.
    fn healthcheck(&mut self, text: &str, http_url: Option<&str>, source: &Source) {
        let bad = || {
            format!(
                "{} is not a health check: use TCP:<port> or HTTP:<port>/<path>, port 1 to 65535",
                shown(text)
            )
        };
        let Some((protocol, target)) = text.split_once(':') else {
            return self.problem("healthcheck", source, bad());
        };
        let (port, path) = match target.find('/') {
            Some(at) => target.split_at(at),
            None => (target, ""),
        };
        let Some(port) = port.parse::<u16>().ok().filter(|p| *p != 0) else {
            return self.problem("healthcheck", source, bad());
        };
        match protocol.to_ascii_uppercase().as_str() {
            "TCP" if path.is_empty() => self.app_probe_port = Some(port),
            "HTTP" => {
                let host = http_url
                    .and_then(|u| reqwest::Url::parse(u).ok())
                    .and_then(|u| u.host_str().map(str::to_string))
                    .unwrap_or_else(|| "localhost".into());
                let path = if path.is_empty() { "/" } else { path };
                // The path is checked where every health_url is checked.
                self.values
                    .push((HEALTH_URL, format!("http://{host}:{port}{path}")));
            }
            _ => self.problem("healthcheck", source, bad()),
        }
    }
}

/// `worker_url` from EB's `http_url` (default `http://localhost`) and
/// `http_port` (default 80), when the file gives either. The port of EB's
/// daemon is `http_port` even when `http_url` names none.
fn application_base(
    http_url: Option<&str>,
    http_port: Option<&str>,
) -> Result<Option<String>, (&'static str, String)> {
    if http_url.is_none() && http_port.is_none() {
        return Ok(None);
    }
    let text = http_url.unwrap_or("http://localhost");
    let url = reqwest::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| {
            (
                "http_url",
                format!(
                    "{} is not an http:// or https:// URL with a host",
                    shown(text)
                ),
            )
        })?;
    let port = match http_port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
            (
                "http_port",
                format!("{} is not a port: allowed 1 to 65535", shown(p)),
            )
        })?,
        None => url.port().unwrap_or(80),
    };
    let host = url.host_str().unwrap_or("localhost");
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(Some(format!(
        "{}://{host}:{port}{}",
        url.scheme(),
        url.path().trim_end_matches('/')
    )))
}

/// What a YAML value is, for messages.
fn kind(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "null",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

fn short(key: &str) -> String {
    if key.chars().count() <= KEY_CHARS {
        key.to_string()
    } else {
        let head: String = key.chars().take(KEY_CHARS).collect();
        format!("{head}... ({} bytes)", key.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(text: &str) -> EbLayer {
        let map: serde_yaml::Mapping = serde_yaml::from_str(text).unwrap();
        let mut layer = EbLayer::default();
        map_keys(&mut layer, &map, &Source::EbConfig("/eb.yaml".into()));
        layer
    }

    fn value<'a>(layer: &'a EbLayer, key: &str) -> Option<&'a str> {
        layer
            .values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_application_url_joins_host_port_and_keeps_a_base_path() {
        let l = mapped("http_port: 8080\n");
        assert_eq!(value(&l, WORKER_URL), Some("http://localhost:8080"));
        let l = mapped("http_url: http://127.0.0.1\n");
        assert_eq!(value(&l, WORKER_URL), Some("http://127.0.0.1:80"));
        let l = mapped("http_url: https://app.internal/base/\nhttp_port: 8443\n");
        assert_eq!(
            value(&l, WORKER_URL),
            Some("https://app.internal:8443/base")
        );
        let l = mapped("http_url: http://[::1]\nhttp_port: 81\n");
        assert_eq!(value(&l, WORKER_URL), Some("http://[::1]:81"));
        let l = mapped("queue_url: https://sqs.x/1/q\n");
        assert_eq!(value(&l, WORKER_URL), None);
    }

    #[test]
    fn health_checks_become_a_probe_port_or_a_health_url() {
        let l = mapped("healthcheck: TCP:8080\n");
        assert_eq!(l.app_probe_port, Some(8080));
        assert_eq!(value(&l, HEALTH_URL), None);
        let l = mapped("healthcheck: HTTP:81/health\nhttp_url: http://127.0.0.1\n");
        assert_eq!(value(&l, HEALTH_URL), Some("http://127.0.0.1:81/health"));
        assert_eq!(l.app_probe_port, None);
        let l = mapped("healthcheck: HTTP:80\n");
        assert_eq!(value(&l, HEALTH_URL), Some("http://localhost:80/"));
        for bad in [
            "TCP",
            "TCP:0",
            "TCP:70000",
            "UDP:80",
            "TCP:80/x",
            "HTTP:x/y",
        ] {
            let l = mapped(&format!("healthcheck: \"{bad}\"\n"));
            assert_eq!(l.problems.len(), 1, "{bad}");
            assert_eq!(l.problems[0].1.setting, "healthcheck");
        }
    }

    #[test]
    fn keys_with_a_meaning_map_and_others_are_listed_once() {
        let l = mapped(
            "via_sns: true\nregistry_table: t-stack-AWSEBWorkerCronLeaderRegistry-1\n\
             verbose: false\ndebug: true\nthreads: 50\nenvironment_name: e\nsome_new_key: [1]\n\
             visibility_timeout: 600\nerror_visibility_timeout: ~\n",
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(value(&l, SNS_UNWRAP), Some("true"));
        assert_eq!(
            value(&l, CRON_TABLE),
            Some("t-stack-AWSEBWorkerCronLeaderRegistry-1")
        );
        assert_eq!(value(&l, LOG_LEVEL), Some("debug"));
        assert_eq!(value(&l, VISIBILITY_TIMEOUT), Some("600"));
        assert_eq!(value(&l, ERROR_VISIBILITY_TIMEOUT), None);
        assert_eq!(l.ignored, ["threads", "environment_name", "some_new_key"]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let l = mapped("http_port: eighty\nverbose: maybe\nqueue_url: [a]\n");
        let keys: Vec<&str> = l.problems.iter().map(|(_, p)| p.setting.as_str()).collect();
        assert_eq!(keys, ["queue_url", "http_port", "verbose"]);
        let feeds: Vec<_> = l.problems.iter().map(|(f, _)| *f).collect();
        assert_eq!(feeds, [Some(QUEUE_URL), Some(WORKER_URL), Some(LOG_LEVEL)]);
        assert!(l
            .problems
            .iter()
            .all(|(_, p)| p.source == Source::EbConfig("/eb.yaml".into())));
    }

    #[test]
    fn many_unknown_keys_are_listed_within_a_bound() {
        let text: String = (0..1000).map(|i| format!("k{i}: 1\n")).collect();
        let l = mapped(&text);
        assert_eq!(l.ignored.len(), MAX_IGNORED_LISTED + 1);
        assert_eq!(l.ignored.last().map(String::as_str), Some("(936 more)"));
    }
}
