//! Log output: human text or JSON lines, always on standard error.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; `level` is a tracing filter (`info`,
/// `sqsd=debug`, ...). Unqualified levels apply to sqsd only, so the AWS SDK's
/// own chatter stays at `warn`.
pub fn init(format: LogFormat, level: &str) {
    let directive = if level.contains('=') {
        level.to_string()
    } else {
        format!("warn,sqsd={level}")
    };
    let filter = EnvFilter::try_new(directive).unwrap_or_else(|_| EnvFilter::new("warn,sqsd=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
