//! sqsd: a drop-in replacement for the AWS Elastic Beanstalk worker daemon.
//!
//! The binary is a thin shell around [`main_with`]; the daemon itself is
//! [`daemon::run`], which takes its shutdown trigger as a parameter.

pub mod admin;
pub mod app;
pub mod aws;
pub mod cli;
pub mod config;
pub mod cron;
pub mod daemon;
pub mod http1;
pub mod local;
pub mod logging;
pub mod signals;
pub mod sqs_server;
pub mod time;

use std::ffi::OsString;
use std::process::ExitCode;

use cli::Mode;
use config::{Inputs, Layers, Loaded, OPTIONS};

/// Exit code for bad configuration (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Runs the command line `args` with environment lookup `env`.
pub fn main_with(args: Vec<OsString>, env: &dyn Fn(&str) -> Option<String>) -> ExitCode {
    let cli = match cli::parse(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let mut flags = cli.flags.clone();
    if matches!(cli.mode, Mode::Local | Mode::SqsServer) {
        local_defaults(&mut flags, env);
    }
    let inputs = Inputs { flags: &flags, env };
    if cli.mode == Mode::Healthcheck {
        return healthcheck(&inputs);
    }
    let loaded = match config::load(&inputs) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sqsd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.mode == Mode::CheckConfig {
        return match cron::CronSource::load(loaded.config.cron_file.clone()) {
            Ok(source) => {
                print!("{}", effective_config(&loaded));
                print!("{}", cron_summary(&source, chrono::Utc::now()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sqsd: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    let config = loaded.config;
    logging::init(config.log_format, &config.log_level);
    if let Some(path) = &config.eb_config {
        let ignored = loaded.layers.eb_ignored();
        if !ignored.is_empty() {
            tracing::debug!(
                eb_config = %path.display(),
                keys = %ignored.join(", "),
                "keys of EB's daemon configuration without a meaning for sqsd, ignored"
            );
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sqsd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signals = match signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sqsd: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = match cli.mode {
            Mode::Local => local::run_local(config, signals.shutdown, signals.reload).await,
            Mode::SqsServer => local::run_server(config, signals.shutdown).await,
            _ => daemon::run(config, signals.shutdown, signals.reload).await,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sqsd: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}

/// In local modes the queue lives on the embedded endpoint: without a
/// configured queue URL, use the default worker queue there.
fn local_defaults(
    flags: &mut std::collections::BTreeMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
) {
    let given = flags.contains_key(config::QUEUE_URL)
        || env("SQSD_QUEUE_URL").is_some_and(|v| !v.is_empty());
    if given {
        return;
    }
    let listen = flags
        .get(config::SQS_LISTEN)
        .cloned()
        .or_else(|| env("SQSD_SQS_LISTEN"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 9324)));
    flags.insert(
        config::QUEUE_URL.to_string(),
        local::default_queue_url(listen),
    );
}

/// The effective configuration as YAML, each line saying where it came from.
/// Secrets are never shown: the signing keys as a count, the token as
/// `(set)`.
pub fn effective_config(loaded: &Loaded) -> String {
    let layers = &loaded.layers;
    let config = &loaded.config;
    let mut out = String::from("# sqsd effective configuration\n");
    if let Some(f) = &config.eb_config {
        out.push_str(&format!("# eb_config: {}\n", f.display()));
        let ignored = layers.eb_ignored();
        if !ignored.is_empty() {
            out.push_str(&format!(
                "# eb_config keys without a meaning for sqsd (ignored): {}\n",
                ignored.join(", ")
            ));
        }
    }
    if let Some(f) = layers.file() {
        out.push_str(&format!("# file: {}\n", f.display()));
    }
    for o in OPTIONS {
        match layers.get(o.key) {
            Some((value, source)) => {
                let quoted = serde_json::to_string(value).unwrap_or_default();
                out.push_str(&format!("{}: {quoted}  # {source}\n", o.key));
            }
            None => out.push_str(&format!("{}: ~  # not set\n", o.key)),
        }
        if o.key == config::HEALTH_URL {
            if let Some(url) = &config.health_url {
                let quoted = serde_json::to_string(url).unwrap_or_default();
                out.push_str(&format!("#   health_url resolves to {quoted}\n"));
            }
        }
    }
    let mut from = Vec::new();
    if let Some(f) = &config.signing_key_file {
        from.push(format!("signing_key_file {}", f.display()));
    }
    if layers.signing_key_env() {
        from.push(format!("environment variable {}", config::SIGNING_KEY_ENV));
    }
    let from = if from.is_empty() {
        "none configured".to_string()
    } else {
        from.join(" and ")
    };
    out.push_str(&format!(
        "signing_keys: {}  # count only; from {from}\n",
        config.signing_keys.len()
    ));
    let token = if config.app_token.is_some() {
        "\"(set)\"  # from app_token_file"
    } else {
        "~  # not set"
    };
    out.push_str(&format!("app_token: {token}\n"));
    match (config.app_probe_port, layers.app_probe_port_source()) {
        (Some(port), Some(source)) => {
            out.push_str(&format!("app_probe_port: {port}  # {source}\n"))
        }
        _ => out.push_str("app_probe_port: ~  # not set\n"),
    }
    out
}

/// The periodic tasks and each one's next three ticks, as YAML comments.
pub fn cron_summary(source: &cron::CronSource, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(path) = &source.path else {
        return "# periodic tasks: none (no cron.yaml found)\n".into();
    };
    let mut out = format!(
        "# periodic tasks from {} (times in UTC): {}\n",
        path.display(),
        source.tasks.len()
    );
    for t in &source.tasks {
        let next: Vec<String> = t
            .schedule
            .upcoming(now, 3)
            .into_iter()
            .map(cron::eb_time)
            .collect();
        out.push_str(&format!(
            "#   {}: POST {} on {:?}; next: {}\n",
            t.name,
            t.url,
            t.schedule.as_str(),
            next.join(", ")
        ));
    }
    out
}

fn healthcheck(inputs: &Inputs<'_>) -> ExitCode {
    let layers = Layers::gather(inputs);
    let Some((text, source)) = layers.get(config::ADMIN_ADDR) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let Ok(mut addr) = text.parse::<std::net::SocketAddr>() else {
        eprintln!("sqsd: admin_addr {text:?} (from {source}) is not an address");
        return ExitCode::from(EXIT_CONFIG);
    };
    // A daemon listening on every address (0.0.0.0, as in a container) is
    // asked on loopback.
    if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        addr.set_ip(loopback);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let answer = match runtime {
        Ok(rt) => rt.block_on(admin::probe(addr, "/healthz")),
        Err(e) => Err(e.to_string()),
    };
    match answer {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("sqsd: {addr}/healthz is not healthy");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sqsd: health check failed: {e}");
            ExitCode::FAILURE
        }
    }
}
