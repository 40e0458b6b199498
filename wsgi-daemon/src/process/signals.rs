//! Signals: blocked in every thread from the start ([`block_signals`]), and waited for by the
//! signal thread, which turns them into what the monitor acts on.

use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};

use super::Shared;

/// Blocks the signals the signal thread waits for in the calling thread, and so in every
/// thread it starts afterwards; returns them for [`Shared::wait_signals`].
pub(super) fn block_signals() -> nix::Result<SigSet> {
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
        Signal::SIGHUP,
        Signal::SIGXCPU,
    ] {
        signals.add(s);
    }
    signals.thread_block()?;
    Ok(signals)
}

impl Shared {
    /// The signal thread: SIGTERM/SIGINT (and SIGHUP) stop, SIGUSR1 and SIGXCPU restart
    /// gracefully; the monitor acts on them.
    pub(super) fn wait_signals(self: Arc<Self>, signals: SigSet) {
        while let Ok(sig) = signals.wait() {
            let mut s = self.signal.lock();
            // A stop wins over a graceful restart.
            if *s != Some(Signal::SIGTERM) {
                *s = Some(match sig {
                    Signal::SIGUSR1 | Signal::SIGXCPU => sig,
                    _ => Signal::SIGTERM,
                });
            }
        }
    }
}
