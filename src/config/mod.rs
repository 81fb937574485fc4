//! Configuration: layering of defaults, the YAML file, the environment and
//! flags (each later layer wins), then parsing into one typed [`Config`].
//!
//! Parsing never stops at the first problem: every bad setting is collected
//! with where it came from, so a user fixes them all in one go.

mod limits;
mod options;
mod parse;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use limits::{MAX_CONFIG_FILE, MAX_NESTING};
pub use options::*;
pub use parse::{parse_duration, LogFormat, SuccessCodes};

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Flag(flag) => write!(f, "flag --{flag}"),
        }
    }
}

/// One bad setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The option's file key, or the file itself for file-level problems.
    pub setting: String,
    pub source: Source,
    pub message: String,
}

/// Every problem found in one configuration; shown as one message.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
    /// Said once after the problems, such as the list of known keys.
    pub notes: Vec<String>,
}

/// Most characters of one problem's message: a message may quote input, and
/// input must not flood the terminal.
const MAX_MESSAGE_CHARS: usize = 600;

/// Most unknown keys of a file listed one by one; the rest are counted.
const MAX_UNKNOWN_LISTED: usize = 20;

/// Most characters of a key quoted in a message.
const MAX_KEY_CHARS: usize = 64;

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            let message = match p.message.char_indices().nth(MAX_MESSAGE_CHARS) {
                Some((cut, _)) => format!("{}...", &p.message[..cut]),
                None => p.message.clone(),
            };
            write!(f, "\n  - {} (from {}): {message}", p.setting, p.source)?;
        }
        for note in &self.notes {
            write!(f, "\n{note}")?;
        }
        Ok(())
    }
}

/// Raw text values after layering, each with its source.
#[derive(Clone, Debug, Default)]
pub struct Layers {
    values: BTreeMap<&'static str, (String, Source)>,
    /// The structured `queues` key of the file (local modes), unparsed.
    queues: Option<(serde_yaml::Value, Source)>,
    problems: Vec<Problem>,
    /// Said once after the problems (the known keys, when one was not).
    notes: Vec<String>,
    file: Option<PathBuf>,
}

/// What the loader reads from outside; tests give a map instead of the process.
pub struct Inputs<'a> {
    /// Flags given on the command line, by option key (and `config`).
    pub flags: &'a BTreeMap<String, String>,
    /// Looks an environment variable up.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Layers {
    /// Stacks default < file < environment < flag for every option.
    pub fn gather(inputs: &Inputs<'_>) -> Layers {
        let mut layers = Layers::default();
        for o in OPTIONS {
            if let Some(d) = o.default {
                layers
                    .values
                    .insert(o.key, (d.to_string(), Source::Default));
            }
        }
        let file = match inputs.flags.get("config") {
            Some(p) => Some((PathBuf::from(p), Source::Flag("config"))),
            None => non_empty((inputs.env)(CONFIG_ENV))
                .map(|p| (PathBuf::from(p), Source::Env(CONFIG_ENV))),
        };
        if let Some((path, source)) = file {
            layers.read_file(&path, source);
        }
        for o in OPTIONS {
            if let Some(v) = non_empty((inputs.env)(o.env)) {
                layers.values.insert(o.key, (v, Source::Env(o.env)));
            }
            if let Some(v) = inputs.flags.get(o.key) {
                layers
                    .values
                    .insert(o.key, (v.clone(), Source::Flag(o.flag)));
            }
        }
        layers
    }

    /// Reads sqsd's file within the bounds of [`limits`]: a file too big,
    /// too deep or not a mapping is one problem, each unknown key is named
    /// once (up to [`MAX_UNKNOWN_LISTED`]) and the known keys are listed once.
    fn read_file(&mut self, path: &Path, via: Source) {
        let map = match limits::read_yaml_mapping(path) {
            Ok(map) => map,
            Err(limits::FileError::Unreadable(message)) => {
                self.problem("config", via, message);
                return;
            }
            Err(limits::FileError::Content(message)) => {
                self.problem("config", Source::File(path.to_path_buf()), message);
                return;
            }
        };
        self.file = Some(path.to_path_buf());
        let Some(map) = map else {
            return;
        };
        let source = Source::File(path.to_path_buf());
        let mut unknown = 0usize;
        let mut not_strings = 0usize;
        for (k, v) in map {
            let Some(key) = k.as_str() else {
                not_strings += 1;
                continue;
            };
            if key == QUEUES {
                self.queues = Some((v, source.clone()));
                continue;
            }
            if key == "config" {
                self.problem(
                    key,
                    source.clone(),
                    "the file's own path can only be given by --config or SQSD_CONFIG".into(),
                );
                continue;
            }
            let Some(spec) = spec(key) else {
                unknown += 1;
                if unknown <= MAX_UNKNOWN_LISTED {
                    self.problem(&short_key(key), source.clone(), "unknown key".into());
                }
                continue;
            };
            match scalar_text(&v) {
                Some(text) => {
                    self.values.insert(spec.key, (text, source.clone()));
                }
                None => self.problem(key, source.clone(), "must be a single value".into()),
            }
        }
        if unknown > MAX_UNKNOWN_LISTED {
            self.problem(
                "config",
                source.clone(),
                format!(
                    "{} more unknown keys (not listed)",
                    unknown - MAX_UNKNOWN_LISTED
                ),
            );
        }
        if not_strings > 0 {
            self.problem(
                "config",
                source,
                format!("{not_strings} keys are not strings: keys are option names"),
            );
        }
        if unknown > 0 {
            self.notes
                .push(format!("known keys in the file: {}", known_keys()));
        }
    }

    fn problem(&mut self, setting: &str, source: Source, message: String) {
        self.problems.push(Problem {
            setting: setting.into(),
            source,
            message,
        });
    }

    /// The raw value and source of an option, if set at any layer.
    pub fn get(&self, key: &str) -> Option<&(String, Source)> {
        self.values.get(key)
    }

    /// The YAML file that was read, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// A key as quoted in a message: a huge key is cut.
fn short_key(key: &str) -> String {
    if key.chars().count() <= MAX_KEY_CHARS {
        key.to_string()
    } else {
        let head: String = key.chars().take(MAX_KEY_CHARS).collect();
        format!("{head}... ({} bytes)", key.len())
    }
}

fn known_keys() -> String {
    let mut keys: Vec<&str> = OPTIONS.iter().map(|o| o.key).collect();
    keys.push(QUEUES);
    keys.join(", ")
}

/// File key of the queues the embedded endpoint creates at start.
pub const QUEUES: &str = "queues";

/// A queue declared for the embedded endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDecl {
    pub name: String,
    /// SQS queue attributes by their API names (`VisibilityTimeout`, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_yaml::Value>,
    /// Dead-letter queue (declared too, or created empty) and its count.
    #[serde(default)]
    pub dead_letter: Option<DeadLetterDecl>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterDecl {
    pub queue: String,
    pub max_receive_count: u32,
}

fn scalar_text(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The daemon's whole configuration, validated.
#[derive(Clone, Debug)]
pub struct Config {
    pub queue_url: String,
    pub http_path: String,
    /// Application base URL without a trailing slash, ready to append a path.
    pub worker_url: String,
    pub mime_type: String,
    pub http_connections: usize,
    pub connect_timeout: Duration,
    pub inactivity_timeout: Duration,
    /// Whole seconds, as SQS takes it.
    pub visibility_timeout: u32,
    pub error_visibility_timeout: u32,
    /// Seconds: messages are received with `min(visibility_timeout, this)`
    /// and renewed while held; 0 = off (receive with `visibility_timeout`,
    /// as EB's daemon does).
    pub visibility_lease: u32,
    pub retention_period: Duration,
    pub max_retries: u32,
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub admin_addr: SocketAddr,
    pub success_codes: SuccessCodes,
    pub drain_timeout: Duration,
    pub log_format: LogFormat,
    pub log_level: String,
    pub cron_file: Option<PathBuf>,
    /// DynamoDB table coordinating periodic tasks across a fleet.
    pub cron_table: Option<String>,
    pub cron_create_table: bool,
    pub batch_linger: Duration,
    /// Listen address of the embedded SQS endpoint.
    pub sqs_listen: SocketAddr,
    /// Queues the embedded endpoint creates at start.
    pub queues: Vec<QueueDecl>,
    /// Sign with fixed local credentials (set by `sqsd local`, not an option).
    pub static_credentials: bool,
    /// On shutdown, let in-flight long polls return instead of cutting them
    /// (not an option; `sqsd local` turns it off: its queue ends with it).
    pub finish_polls_on_shutdown: bool,
}

/// A configuration together with the layers it came from (for `check-config`).
pub struct Loaded {
    pub config: Config,
    pub layers: Layers,
}

/// Gathers and validates the configuration; all problems are reported at once.
pub fn load(inputs: &Inputs<'_>) -> Result<Loaded, ConfigError> {
    let layers = Layers::gather(inputs);
    let mut p = parse::Parser::new(&layers);
    let config = Config {
        queue_url: p.required(QUEUE_URL, parse::queue_url),
        http_path: p.field(HTTP_PATH, parse::http_path),
        worker_url: p.field(WORKER_URL, parse::worker_url),
        mime_type: p.field(MIME_TYPE, parse::mime_type),
        http_connections: p.field(HTTP_CONNECTIONS, |v| parse::integer(v, 1, 1000)),
        connect_timeout: p.field(CONNECT_TIMEOUT, |v| parse::duration_in(v, 1, 60)),
        inactivity_timeout: p.field(INACTIVITY_TIMEOUT, |v| parse::duration_in(v, 1, 36000)),
        visibility_timeout: p.field(VISIBILITY_TIMEOUT, |v| parse::whole_seconds(v, 0, 43200)),
        error_visibility_timeout: p.field(ERROR_VISIBILITY_TIMEOUT, |v| {
            parse::whole_seconds(v, 0, 43200)
        }),
        visibility_lease: p.field(VISIBILITY_LEASE, |v| parse::whole_seconds(v, 0, 43200)),
        retention_period: p.field(RETENTION_PERIOD, |v| parse::duration_in(v, 60, 1_209_600)),
        max_retries: p.field(MAX_RETRIES, |v| parse::integer(v, 1, 100)),
        endpoint_url: p.optional(ENDPOINT_URL, parse::endpoint_url),
        region: p.optional(REGION, parse::region),
        admin_addr: p.field_or(
            ADMIN_ADDR,
            parse::socket_addr,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ),
        success_codes: p.field(SUCCESS_CODES, parse::success_codes),
        drain_timeout: p.field(DRAIN_TIMEOUT, |v| parse::duration_in(v, 0, 3600)),
        log_format: p.field(LOG_FORMAT, parse::log_format),
        log_level: p.field(LOG_LEVEL, parse::log_level),
        cron_file: p.optional(CRON_FILE, |v| Ok(PathBuf::from(v))),
        cron_table: p.optional(CRON_TABLE, parse::table_name),
        cron_create_table: p.field_or(CRON_CREATE_TABLE, parse::boolean, true),
        batch_linger: p.field(BATCH_LINGER, parse::linger),
        sqs_listen: p.field_or(
            SQS_LISTEN,
            parse::socket_addr,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        ),
        static_credentials: false,
        finish_polls_on_shutdown: true,
        queues: Vec::new(),
    };
    let mut config = config;
    let mut queue_problems = Vec::new();
    if let Some((value, source)) = &layers.queues {
        match serde_yaml::from_value::<Vec<QueueDecl>>(value.clone()) {
            Ok(q) => config.queues = q,
            Err(e) => queue_problems.push(Problem {
                setting: QUEUES.into(),
                source: source.clone(),
                message: format!(
                    "must be a list of {{name, attributes, dead_letter: {{queue, max_receive_count}}, tags}}: {e}"
                ),
            }),
        }
    }
    let mut problems = layers.problems.clone();
    problems.extend(p.into_problems());
    problems.extend(queue_problems);
    if problems.is_empty() {
        Ok(Loaded { config, layers })
    } else {
        Err(ConfigError {
            problems,
            notes: layers.notes.clone(),
        })
    }
}

impl Config {
    /// The queue's name: the last path segment of its URL.
    pub fn queue_name(&self) -> &str {
        self.queue_url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests;
