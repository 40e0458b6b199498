//! The signal thread: signals are blocked in every other thread, and this one turns them into
//! what the monitor acts on.

use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};

use super::Shared;

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
