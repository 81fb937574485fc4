//! Signals: SIGTERM and SIGINT start a clean shutdown (a second one exits at
//! once); SIGHUP asks for `cron.yaml` and the signing keys to be read again.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Exit code after a second signal.
pub const SECOND_SIGNAL_EXIT: i32 = 130;

/// Counts SIGHUPs; a change asks for a reload.
pub type Reload = watch::Receiver<u64>;

/// What the signal handlers report.
pub struct Signals {
    /// Cancelled on the first SIGTERM or SIGINT.
    pub shutdown: CancellationToken,
    pub reload: Reload,
}

/// Installs the handlers now (so an early signal is not lost).
pub fn install() -> std::io::Result<Signals> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
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
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(
                signal = "SIGHUP",
                "reloading cron.yaml and the signing keys"
            );
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(Signals {
        shutdown: token,
        reload: rx,
    })
}
