//! The command line: one flag per option of the table in `config`, with its
//! environment variable and default shown in `--help`, and the subcommands.

use std::collections::BTreeMap;
use std::ffi::OsString;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::{CONFIG_ENV, OPTIONS};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Run the daemon (no subcommand).
    Run,
    /// Validate and print the effective configuration.
    CheckConfig,
    /// Ask a running daemon's `/healthz`; exit 0 or 1.
    Healthcheck,
    /// Embedded SQS endpoint, worker queue and the daemon against it.
    Local,
    /// The embedded SQS endpoint alone.
    SqsServer,
}

/// Parsed command line: the mode and the flags given, by option key.
#[derive(Debug)]
pub struct Cli {
    pub mode: Mode,
    pub flags: BTreeMap<String, String>,
}

const ABOUT: &str = "A drop-in replacement for the AWS Elastic Beanstalk worker daemon: \
long-polls an SQS queue, POSTs each message to the local application, deletes it on success \
and makes it visible again on failure.";

const AFTER_HELP: &str = "Every option can also be set in the YAML file given by --config (key \
as shown in the variable name without SQSD_, in lower case) or by its environment variable; \
a flag beats the environment, which beats the file, which beats the default. Durations take \
plain seconds (300) or a unit (500ms, 5m, 1h).\n\nExit codes: 0 stopped cleanly, 64 bad \
configuration or unusable queue, 1 other failure, 130 second signal.";

pub fn command() -> Command {
    let mut cmd = Command::new("sqsd")
        .version(env!("CARGO_PKG_VERSION"))
        .about(ABOUT)
        .after_help(AFTER_HELP)
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("PATH")
                .global(true)
                .action(ArgAction::Set)
                .help(format!("YAML configuration file [env: {CONFIG_ENV}]")),
        )
        .subcommand(
            Command::new("check-config")
                .about("Validate the configuration, print the effective values and exit"),
        )
        .subcommand(Command::new("local").about(
            "Run with an embedded SQS endpoint on --sqs-listen: create the worker queue and its \
             dead-letter queue, print how to send to it, and deliver to --worker-url",
        ))
        .subcommand(
            Command::new("sqs-server")
                .about("Serve the embedded SQS-compatible endpoint alone, on --sqs-listen"),
        )
        .subcommand(Command::new("healthcheck").about(
            "Query a running daemon's /healthz on --admin-addr; exit 0 if healthy, 1 if not",
        ));
    for o in OPTIONS {
        let default = o
            .default
            .map(|d| format!(" [default: {d}]"))
            .unwrap_or_default();
        cmd = cmd.arg(
            Arg::new(o.key)
                .long(o.flag)
                .value_name(o.value_name)
                .global(true)
                .action(ArgAction::Set)
                .help(format!("{} [env: {}]{default}", o.help, o.env)),
        );
    }
    cmd
}

/// Parses the command line; `Err` carries clap's error (help and version
/// included) for the caller to print and exit with.
pub fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let (mode, sub) = match matches.subcommand() {
        Some(("check-config", m)) => (Mode::CheckConfig, m),
        Some(("healthcheck", m)) => (Mode::Healthcheck, m),
        Some(("local", m)) => (Mode::Local, m),
        Some(("sqs-server", m)) => (Mode::SqsServer, m),
        _ => (Mode::Run, &matches),
    };
    Ok(Cli {
        mode,
        flags: flags(sub),
    })
}

fn flags(m: &ArgMatches) -> BTreeMap<String, String> {
    let keys = std::iter::once("config").chain(OPTIONS.iter().map(|o| o.key));
    keys.filter_map(|k| m.get_one::<String>(k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_before_or_after_the_subcommand_are_read() {
        let cli = parse([
            "sqsd",
            "--queue-url",
            "http://x/1/q",
            "check-config",
            "--http-path",
            "/p",
        ])
        .unwrap();
        assert_eq!(cli.mode, Mode::CheckConfig);
        assert_eq!(
            cli.flags.get("queue_url").map(String::as_str),
            Some("http://x/1/q")
        );
        assert_eq!(cli.flags.get("http_path").map(String::as_str), Some("/p"));
        assert!(parse(["sqsd", "--no-such-flag", "1"]).is_err());
    }

    #[test]
    fn help_names_every_flag_variable_and_default() {
        let help = command().render_long_help().to_string();
        for o in OPTIONS {
            assert!(
                help.contains(&format!("--{}", o.flag)),
                "--{} missing",
                o.flag
            );
            assert!(help.contains(o.env), "{} missing", o.env);
            if let Some(d) = o.default {
                assert!(
                    help.contains(&format!("[default: {d}]")),
                    "default of {} missing",
                    o.key
                );
            }
        }
    }
}
