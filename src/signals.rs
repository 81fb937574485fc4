//! SIGTERM and SIGINT: the first starts a clean shutdown, the second exits
//! at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Exit code after a second signal.
pub const SECOND_SIGNAL_EXIT: i32 = 130;

/// Installs the handlers now (so an early signal is not lost) and returns a
/// token that is cancelled on the first signal.
pub fn install() -> std::io::Result<CancellationToken> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let first = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! { _ = term.recv() => "SIGTERM", _ = int.recv() => "SIGINT" };
        tracing::info!(
            signal = name,
            "shutting down; a second signal exits at once"
        );
        first.cancel();
        let name = tokio::select! { _ = term.recv() => "SIGTERM", _ = int.recv() => "SIGINT" };
        tracing::warn!(signal = name, "second signal: exiting now without draining");
        std::process::exit(SECOND_SIGNAL_EXIT);
    });
    Ok(token)
}
