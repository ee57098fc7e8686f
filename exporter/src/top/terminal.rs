//! Owns the terminal while the live screen runs: raw mode and the alternate screen on entry, and
//! their undoing on every way out: normal return (drop), panic (ratatui's hook), and SIGTERM or
//! SIGINT (a flag the event loop polls, so it unwinds through the drop). SIGHUP keeps its default
//! action: the terminal is gone, there is nothing to restore, and crossterm would spin on the dead tty.

use ratatui::DefaultTerminal;
use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("kepler-rs top needs a terminal on stdin and stdout; for scripts use --once")]
    NotATerminal,
    #[error("cannot set up the terminal: {0}")]
    Setup(#[source] std::io::Error),
    #[error("cannot watch signal {signal}: {source}")]
    Signal { signal: i32, source: std::io::Error },
}

/// The terminal in raw mode on the alternate screen; restored when dropped.
pub(crate) struct TerminalGuard {
    pub(crate) terminal: DefaultTerminal,
}

impl TerminalGuard {
    pub(crate) fn enter() -> Result<TerminalGuard, TerminalError> {
        if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
            return Err(TerminalError::NotATerminal);
        }
        // try_init installs a panic hook that restores the terminal before the panic message.
        match ratatui::try_init() {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                ratatui::restore();
                Err(TerminalError::Setup(e))
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        ratatui::restore();
    }
}

/// A flag raised by SIGTERM and SIGINT (instead of dying with the terminal in raw mode).
pub(crate) fn stop_flag() -> Result<Arc<AtomicBool>, TerminalError> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, flag.clone())
            .map_err(|source| TerminalError::Signal { signal, source })?;
    }
    Ok(flag)
}
