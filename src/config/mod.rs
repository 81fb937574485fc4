//! Configuration: layering of defaults, the YAML file, the environment and
//! flags (each later layer wins), then parsing into one typed [`Config`].
//!
//! Parsing never stops at the first problem: every bad setting is collected
//! with where it came from, so a user fixes them all in one go.

mod eb;
mod limits;
mod options;
mod parse;
mod secrets;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use limits::{MAX_CONFIG_FILE, MAX_NESTING};
pub use options::*;
pub use parse::{parse_duration, CronTableMode, LogFormat, RetryBackoff, SuccessCodes};
pub use secrets::{MAX_SIGNING_KEYS, MIN_SIGNING_KEY_BYTES};

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
    /// Elastic Beanstalk's daemon configuration (`eb_config`).
    EbConfig(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Flag(flag) => write!(f, "flag --{flag}"),
            Source::EbConfig(path) => write!(f, "eb_config {}", path.display()),
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
    /// EB's `healthcheck: TCP:<port>`, read from `eb_config`.
    app_probe_port: Option<(u16, Source)>,
    /// Whether `SQSD_SIGNING_KEY` was set (its keys are never kept here).
    signing_key_env: bool,
    /// Keys of `eb_config` accepted without a meaning for sqsd.
    eb_ignored: Vec<String>,
    /// Problems of `eb_config`, each with the option its key feeds; kept
    /// only when no higher layer sets that option.
    eb_problems: Vec<(Option<&'static str>, Problem)>,
}

/// What the loader reads from outside; tests give a map instead of the process.
pub struct Inputs<'a> {
    /// Flags given on the command line, by option key (and `config`).
    pub flags: &'a BTreeMap<String, String>,
    /// Looks an environment variable up.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Layers {
    /// Stacks default < EB's file (`eb_config`) < sqsd's file <
    /// environment < flag for every option.
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
        if let Some((path, via)) = layers.eb_config_path(inputs) {
            layers.apply_eb(&path, &via);
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
        for (feeds, problem) in std::mem::take(&mut layers.eb_problems) {
            let overridden = feeds.is_some_and(|key| {
                layers
                    .values
                    .get(key)
                    .is_some_and(|(_, s)| !matches!(s, Source::Default | Source::EbConfig(_)))
            });
            if !overridden {
                layers.problems.push(problem);
            }
        }
        // EB's probe port belongs to EB's application address: pointed at
        // another application, sqsd probes that one's port.
        let own_worker_url = layers
            .values
            .get(WORKER_URL)
            .is_some_and(|(_, s)| !matches!(s, Source::Default | Source::EbConfig(_)));
        if own_worker_url {
            layers.app_probe_port = None;
        }
        layers.derive_cron_table_mode();
        layers.signing_key_env = non_empty((inputs.env)(SIGNING_KEY_ENV)).is_some();
        layers
    }

    /// Where EB's file is named: a flag, else the environment, else sqsd's
    /// own file (already read).
    fn eb_config_path(&self, inputs: &Inputs<'_>) -> Option<(PathBuf, Source)> {
        let spec = spec(EB_CONFIG)?;
        if let Some(p) = inputs.flags.get(EB_CONFIG).filter(|p| !p.is_empty()) {
            return Some((PathBuf::from(p), Source::Flag(spec.flag)));
        }
        if let Some(p) = non_empty((inputs.env)(spec.env)) {
            return Some((PathBuf::from(p), Source::Env(spec.env)));
        }
        match self.values.get(EB_CONFIG) {
            Some((p, source @ Source::File(_))) if !p.is_empty() => {
                Some((PathBuf::from(p), source.clone()))
            }
            _ => None,
        }
    }

    /// Lays EB's file under sqsd's: its values fill only what sqsd's own
    /// file left at the default (environment and flags come after).
    fn apply_eb(&mut self, path: &Path, via: &Source) {
        let layer = eb::read(path, via);
        let source = Source::EbConfig(path.to_path_buf());
        for (key, text) in layer.values {
            let taken = self
                .values
                .get(key)
                .is_some_and(|(_, s)| *s != Source::Default);
            if !taken {
                self.values.insert(key, (text, source.clone()));
            }
        }
        self.app_probe_port = layer.app_probe_port.map(|port| (port, source));
        self.eb_problems = layer.problems;
        self.eb_ignored = layer.ignored;
    }

    /// A `cron_table` taken from EB's file is EB's leader registry, so its
    /// mode follows unless some layer chose one.
    fn derive_cron_table_mode(&mut self) {
        let mode_chosen = self
            .values
            .get(CRON_TABLE_MODE)
            .is_some_and(|(_, source)| *source != Source::Default);
        if mode_chosen {
            return;
        }
        if let Some((_, source @ Source::EbConfig(_))) = self.values.get(CRON_TABLE) {
            let source = source.clone();
            self.values
                .insert(CRON_TABLE_MODE, ("eb".to_string(), source));
        }
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
            let text = if LIST_KEYS.contains(&spec.key) {
                list_text(&v)
            } else {
                scalar_text(&v)
            };
            match text {
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

    /// Where `app_probe_port` came from, if it is set.
    pub fn app_probe_port_source(&self) -> Option<&Source> {
        self.app_probe_port.as_ref().map(|(_, source)| source)
    }

    /// Keys of `eb_config` that mean nothing to sqsd (EB's own tuning,
    /// keys of newer platforms): accepted, for one line at debug level.
    pub fn eb_ignored(&self) -> &[String] {
        &self.eb_ignored
    }

    /// Whether `SQSD_SIGNING_KEY` was given.
    pub fn signing_key_env(&self) -> bool {
        self.signing_key_env
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

/// A scalar, or a list of scalars written as the comma-separated text the
/// environment and flags take.
fn list_text(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::Sequence(items) => {
            let texts: Option<Vec<String>> = items.iter().map(scalar_text).collect();
            texts.map(|t| t.join(","))
        }
        serde_yaml::Value::Null => Some(String::new()),
        other => scalar_text(other),
    }
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
///
/// `Debug` shows the secrets (`signing_keys`, `app_token`) only as a count
/// and `(set)`, so logging a configuration never leaks them.
#[derive(Clone)]
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
    pub retry_backoff: RetryBackoff,
    /// Whole seconds; cap of the exponential backoff.
    pub max_error_visibility: u32,
    /// Absolute URL the daemon GETs to see whether the application is
    /// healthy (a path given by the user is already joined to `worker_url`).
    pub health_url: Option<String>,
    pub health_interval: Duration,
    /// Statuses that dead-letter a message; sorted, no repeats, never 2xx
    /// or 429.
    pub dead_letter_codes: Vec<u16>,
    /// Deliveries started per second on average; 0 = unlimited.
    pub max_rate: f64,
    pub signing_key_file: Option<PathBuf>,
    /// Keys of `signing_key_file`, then those of `SQSD_SIGNING_KEY`; each at
    /// least 32 bytes, at most 16 in all. Never print them.
    pub signing_keys: Vec<Vec<u8>>,
    pub app_token_file: Option<PathBuf>,
    /// Visible ASCII, sent as `Authorization: Bearer <token>`. Never print it.
    pub app_token: Option<String>,
    pub sns_unwrap: bool,
    pub ecs_task_protection: bool,
    pub ecs_task_protection_minutes: u32,
    /// Zero means never.
    pub queue_metrics_interval: Duration,
    /// Elastic Beanstalk's daemon configuration the settings started from.
    pub eb_config: Option<PathBuf>,
    pub cron_table_mode: CronTableMode,
    /// Port the daemon TCP-probes to see whether the application is up
    /// (EB's `healthcheck: TCP:<port>`).
    pub app_probe_port: Option<u16>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("queue_url", &self.queue_url)
            .field("http_path", &self.http_path)
            .field("worker_url", &self.worker_url)
            .field("mime_type", &self.mime_type)
            .field("http_connections", &self.http_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("inactivity_timeout", &self.inactivity_timeout)
            .field("visibility_timeout", &self.visibility_timeout)
            .field("error_visibility_timeout", &self.error_visibility_timeout)
            .field("retention_period", &self.retention_period)
            .field("max_retries", &self.max_retries)
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("admin_addr", &self.admin_addr)
            .field("success_codes", &self.success_codes)
            .field("drain_timeout", &self.drain_timeout)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("cron_file", &self.cron_file)
            .field("cron_table", &self.cron_table)
            .field("cron_create_table", &self.cron_create_table)
            .field("batch_linger", &self.batch_linger)
            .field("sqs_listen", &self.sqs_listen)
            .field("queues", &self.queues)
            .field("static_credentials", &self.static_credentials)
            .field("finish_polls_on_shutdown", &self.finish_polls_on_shutdown)
            .field("visibility_lease", &self.visibility_lease)
            .field("retry_backoff", &self.retry_backoff)
            .field("max_error_visibility", &self.max_error_visibility)
            .field("health_url", &self.health_url)
            .field("health_interval", &self.health_interval)
            .field("dead_letter_codes", &self.dead_letter_codes)
            .field("max_rate", &self.max_rate)
            .field("signing_key_file", &self.signing_key_file)
            .field(
                "signing_keys",
                &format_args!("({} keys)", self.signing_keys.len()),
            )
            .field("app_token_file", &self.app_token_file)
            .field(
                "app_token",
                &format_args!(
                    "{}",
                    if self.app_token.is_some() {
                        "(set)"
                    } else {
                        "None"
                    }
                ),
            )
            .field("sns_unwrap", &self.sns_unwrap)
            .field("ecs_task_protection", &self.ecs_task_protection)
            .field(
                "ecs_task_protection_minutes",
                &self.ecs_task_protection_minutes,
            )
            .field("queue_metrics_interval", &self.queue_metrics_interval)
            .field("eb_config", &self.eb_config)
            .field("cron_table_mode", &self.cron_table_mode)
            .field("app_probe_port", &self.app_probe_port)
            .finish()
    }
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
        retry_backoff: p.field(RETRY_BACKOFF, parse::retry_backoff),
        max_error_visibility: p.field(MAX_ERROR_VISIBILITY, |v| parse::whole_seconds(v, 1, 43200)),
        health_url: None,
        health_interval: p.field(HEALTH_INTERVAL, |v| {
            parse::duration_between(
                v,
                Duration::from_millis(100),
                Duration::from_secs(3600),
                "100ms to 1h",
            )
        }),
        dead_letter_codes: p.field(DEAD_LETTER_CODES, parse::dead_letter_codes),
        max_rate: p.field(MAX_RATE, parse::max_rate),
        signing_key_file: p.optional(SIGNING_KEY_FILE, |v| Ok(PathBuf::from(v))),
        signing_keys: Vec::new(),
        app_token_file: p.optional(APP_TOKEN_FILE, |v| Ok(PathBuf::from(v))),
        app_token: None,
        sns_unwrap: p.field(SNS_UNWRAP, parse::boolean),
        ecs_task_protection: p.field(ECS_TASK_PROTECTION, parse::boolean),
        ecs_task_protection_minutes: p.field_or(
            ECS_TASK_PROTECTION_MINUTES,
            |v| parse::integer(v, 1, 2880),
            60,
        ),
        queue_metrics_interval: p.field(QUEUE_METRICS_INTERVAL, parse::interval_or_off),
        eb_config: p.optional(EB_CONFIG, |v| Ok(PathBuf::from(v))),
        cron_table_mode: p.field(CRON_TABLE_MODE, parse::cron_table_mode),
        app_probe_port: layers.app_probe_port.as_ref().map(|(port, _)| *port),
    };
    let mut config = config;
    let worker_url = config.worker_url.clone();
    config.health_url = p.optional(HEALTH_URL, |v| parse::health_url(v, &worker_url));
    read_secrets(&mut config, &mut p, inputs.env);
    check_combinations(&config, &mut p);
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

/// Settings that are fine alone but not together.
fn check_combinations(config: &Config, p: &mut parse::Parser<'_>) {
    if config.cron_table_mode == CronTableMode::Eb && config.cron_table.is_none() {
        let source = p.source(CRON_TABLE_MODE).unwrap_or(Source::Default);
        p.problem(
            CRON_TABLE_MODE,
            source,
            "eb needs cron_table: the name of Elastic Beanstalk's leader registry (registry_table of eb_config)".into(),
        );
    }
}

/// Reads the signing keys and the token the configuration names; a problem
/// names the setting and where its path came from, never the secret.
fn read_secrets(
    config: &mut Config,
    p: &mut parse::Parser<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) {
    if let Some(path) = &config.app_token_file {
        match secrets::app_token_from_file(path) {
            Ok(token) => config.app_token = Some(token),
            Err(message) => {
                let source = p.source(APP_TOKEN_FILE).unwrap_or(Source::Default);
                p.problem(APP_TOKEN_FILE, source, message);
            }
        }
    }
    match signing_keys(config.signing_key_file.as_deref(), env) {
        Ok(keys) => config.signing_keys = keys,
        Err(problems) => {
            for mut problem in problems {
                if problem.setting == SIGNING_KEY_FILE {
                    problem.source = p.source(SIGNING_KEY_FILE).unwrap_or(Source::Default);
                }
                p.problem(&problem.setting, problem.source, problem.message);
            }
        }
    }
}

/// Keys of the file, then of `SQSD_SIGNING_KEY`, checked together.
fn signing_keys(
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Vec<u8>>, Vec<Problem>> {
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    if let Some(path) = file {
        match secrets::signing_keys_from_file(path) {
            Ok(k) => keys.extend(k),
            Err(message) => problems.push(Problem {
                setting: SIGNING_KEY_FILE.into(),
                source: Source::File(path.to_path_buf()),
                message,
            }),
        }
    }
    if let Some(text) = non_empty(env(SIGNING_KEY_ENV)) {
        if text.split(',').all(|k| k.trim().is_empty()) {
            problems.push(Problem {
                setting: SIGNING_KEY_ENV.into(),
                source: Source::Env(SIGNING_KEY_ENV),
                message: "is set but holds no key: unset it, or give keys separated by commas"
                    .into(),
            });
        }
        match secrets::signing_keys_from_env(&text) {
            Ok(k) => keys.extend(k),
            Err(message) => problems.push(Problem {
                setting: SIGNING_KEY_ENV.into(),
                source: Source::Env(SIGNING_KEY_ENV),
                message,
            }),
        }
    }
    if problems.is_empty() && keys.len() > MAX_SIGNING_KEYS {
        problems.push(Problem {
            setting: SIGNING_KEY_ENV.into(),
            source: Source::Env(SIGNING_KEY_ENV),
            message: format!(
                "with signing_key_file this makes {} keys: at most {MAX_SIGNING_KEYS} are allowed in all",
                keys.len()
            ),
        });
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(problems)
    }
}

/// Reads the signing keys again (`signing_key_file`, then
/// `SQSD_SIGNING_KEY`), for a reload on SIGHUP. On error the caller keeps
/// the keys it has; the error never contains a key.
pub fn reload_signing_keys(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Vec<u8>>, ConfigError> {
    signing_keys(config.signing_key_file.as_deref(), env).map_err(|problems| ConfigError {
        problems,
        notes: Vec::new(),
    })
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
