//! Live progress on stderr: one spinner line per phase (indicatif) on a
//! terminal, plain lines when stderr is not a terminal, nothing with `--json`.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone)]
enum Mode {
    Bars(MultiProgress),
    Plain,
    Off,
}

/// Where progress goes.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    mode: Mode,
}

impl Progress {
    /// Bars on a terminal, plain lines otherwise, nothing when `quiet`.
    pub(crate) fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Mode::Plain
        };
        Progress { mode }
    }

    /// A line of narration (cluster started, between phases, ...).
    pub(crate) fn note(&self, msg: &str) {
        match &self.mode {
            Mode::Bars(m) => {
                let _ = m.println(msg);
            }
            Mode::Plain => eprintln!("{msg}"),
            Mode::Off => {}
        }
    }

    /// A progress line for one phase.
    pub(crate) fn phase(&self, name: &str) -> PhaseBar {
        let bar = match &self.mode {
            Mode::Bars(m) => {
                let bar = m.add(ProgressBar::new_spinner());
                if let Ok(style) =
                    ProgressStyle::with_template("{spinner} {prefix:<16} {elapsed:>4} {wide_msg}")
                {
                    bar.set_style(style);
                }
                bar.set_prefix(name.to_owned());
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            Mode::Plain => {
                eprintln!("phase {name}: started");
                None
            }
            Mode::Off => None,
        };
        PhaseBar {
            name: name.to_owned(),
            bar,
            plain: matches!(self.mode, Mode::Plain),
            status: Arc::new(Mutex::new(String::new())),
        }
    }
}

/// The progress line of one phase; cheap to clone (the ticker task holds one).
#[derive(Debug, Clone)]
pub(crate) struct PhaseBar {
    name: String,
    bar: Option<ProgressBar>,
    plain: bool,
    status: Arc<Mutex<String>>,
}

impl PhaseBar {
    /// What the fault sequence is doing now.
    pub(crate) fn status(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if self.plain {
            eprintln!("phase {}: {msg}", self.name);
        }
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = msg;
    }

    /// Refresh the live numbers.
    pub(crate) fn update(&self, ops: u64, errors: u64, ops_per_sec: f64) {
        if let Some(bar) = &self.bar {
            let status = self
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            bar.set_message(format!(
                "{ops:>8} ops {errors:>6} err {ops_per_sec:>6.0}/s  {status}"
            ));
        }
    }

    /// The phase is over: leave its summary on screen.
    pub(crate) fn finish(&self, summary: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(summary.to_owned()),
            None if self.plain => eprintln!("phase {}: {summary}", self.name),
            None => {}
        }
    }
}
