//! Progress on stderr for long-running commands, shown only when stderr is a terminal (never in
//! pipes, logs or tests, and never on stdout, which carries results). Without a terminal,
//! `KEYSAFE_PROGRESS=lines` asks for plain progress lines instead (for logs of long offline runs,
//! and for scripts that act on progress); otherwise nothing is printed.
//!
//! ```no_run
//! let p = keysafe_cli::progress::Progress::bar(100, "re-encrypting");
//! for _ in 0..100 { p.inc(1); }
//! p.finish("re-encrypted 100 versions");
//! ```

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A progress bar or spinner; all methods are cheap no-ops when hidden. Clones share the bar.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

impl Progress {
    /// A bar counting `len` items.
    pub fn bar(len: u64, message: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(len), target());
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.to_owned());
        Self { bar }
    }

    /// A bar over a fixed time span (for example a benchmark's duration).
    pub fn timer(total: Duration, message: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total.as_millis() as u64), target());
        if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {elapsed}/{duration}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    /// A spinner for work of unknown length.
    pub fn spinner(message: &str) -> Self {
        let bar = ProgressBar::with_draw_target(None, target());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self { bar }
    }

    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Whether hidden progress is still wanted as plain lines on stderr (`KEYSAFE_PROGRESS=lines`).
    pub fn wants_lines(&self) -> bool {
        self.bar.is_hidden() && std::env::var_os("KEYSAFE_PROGRESS").is_some_and(|v| v == "lines")
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn set_length(&self, len: u64) {
        self.bar.set_length(len);
    }

    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    pub fn set_message(&self, message: &str) {
        self.bar.set_message(message.to_owned());
    }

    /// Prints a line above the bar (or plainly on stderr when hidden).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Removes the bar and leaves `message` in its place (nothing when hidden).
    pub fn finish(&self, message: &str) {
        if self.bar.is_hidden() {
            return;
        }
        self.bar.finish_and_clear();
        eprintln!("{message}");
    }

    /// Removes the bar without a trace.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_when_stderr_is_not_a_terminal() {
        // Under `cargo test` stderr is captured, not a terminal.
        if std::io::stderr().is_terminal() {
            return;
        }
        let p = Progress::bar(3, "x");
        assert!(p.is_hidden());
        p.inc(3);
        p.finish("done");
        assert!(Progress::spinner("y").is_hidden());
        assert!(Progress::timer(Duration::from_secs(1), "z").is_hidden());
    }
}
