//! Progress of long work (tract measurements, verification, benchmark runs), shown as bars
//! on stderr. Library code takes a [`Progress`] (through `Options`, or as an argument) and
//! asks it for a [`Task`]; whether anything is drawn is the caller's choice: the default
//! is hidden, and [`Progress::stderr`] draws only when stderr is a terminal.
//!
//! ```
//! use onnx_shallow::progress::Progress;
//! let progress = Progress::hidden();
//! let runs = progress.bar("timing", 30);
//! for _ in 0..30 {
//!     runs.inc();
//! }
//! let _loading = progress.spinner("loading model.onnx"); // cleared when dropped
//! ```

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where tasks are drawn: nowhere, or stderr (when it is a terminal). Cloning shares the
/// display, so tasks started anywhere stack as lines under each other.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    display: Option<MultiProgress>,
}

/// One piece of long work; its line disappears when it is dropped.
pub struct Task(ProgressBar);

/// How often a spinner redraws itself while the work gives no news.
const SPINNER_TICK: Duration = Duration::from_millis(120);

impl Progress {
    /// Draws nothing.
    pub fn hidden() -> Progress {
        Progress::default()
    }

    /// Draws on stderr, unless stderr is not a terminal (a pipe, a file, CI logs).
    pub fn stderr() -> Progress {
        Progress {
            display: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// A bar for `total` steps: `label [####    ] 12/30 3s, ~5s left` (the estimate from
    /// the rate so far).
    pub fn bar(&self, label: &str, total: u64) -> Task {
        let style =
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}, ~{eta} left")
                .expect("a valid template")
                .progress_chars("#>-");
        self.task(ProgressBar::new(total).with_style(style), label)
    }

    /// A spinner for work that reports no steps: `⠋ label 0:02`.
    pub fn spinner(&self, label: &str) -> Task {
        let style =
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid template");
        let task = self.task(ProgressBar::new_spinner().with_style(style), label);
        task.0.enable_steady_tick(SPINNER_TICK);
        task
    }

    fn task(&self, bar: ProgressBar, label: &str) -> Task {
        let bar = match &self.display {
            Some(display) => display.add(bar),
            None => {
                bar.set_draw_target(ProgressDrawTarget::hidden());
                bar
            }
        };
        bar.set_message(label.to_string());
        Task(bar)
    }
}

impl Task {
    /// One more step done.
    pub fn inc(&self) {
        self.0.inc(1);
    }

    /// Moves to step `position` of `total`, with a new label.
    pub fn update(&self, position: u64, total: u64, label: String) {
        self.0.set_length(total);
        self.0.set_position(position);
        self.0.set_message(label);
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_tasks_count_their_steps_and_draw_nothing() {
        let task = Progress::hidden().bar("work", 3);
        task.inc();
        task.inc();
        assert_eq!(task.0.position(), 2);
        assert!(task.0.is_hidden());
    }
}
