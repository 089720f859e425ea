//! Reloading what is read from files (token keys, TLS certificates) without a restart: when a
//! file changes, checked on an interval, and on SIGHUP.

use std::{path::PathBuf, time::Duration, time::SystemTime};

use tokio_util::sync::CancellationToken;

/// Calls `reload` with the reason whenever one of `files` changes (checked every `interval`) or
/// the process gets SIGHUP, until `stop`.
pub(crate) async fn on_change(
    files: Vec<PathBuf>,
    interval: Duration,
    stop: CancellationToken,
    mut reload: impl FnMut(&str),
) {
    let mut seen = stamps(&files);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hangups = hangups();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                let now = stamps(&files);
                if now != seen {
                    seen = now;
                    reload("a file changed");
                }
            }
            Some(()) = next_hangup(&mut hangups) => {
                seen = stamps(&files);
                reload("SIGHUP");
            }
        }
    }
}

/// What tells a changed file from an unchanged one: its modification time and length (a
/// replaced file, as Kubernetes swaps a mounted secret, changes at least the time).
fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP"))
        .ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    match hangups {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}
