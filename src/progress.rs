//! Progress of long work (folding, training, the selection walk, verification, timing),
//! told to a [`Progress`] the caller gives: a terminal's bars, a log, a window. The
//! library tells it stages; nothing is drawn unless the caller draws it ([`Silent`] is
//! the default).
//!
//! Stages nest: a stage begun while another runs is part of it, and `advance`, `message`
//! and `finish` are about the innermost one. Library code begins a stage with
//! [`Stage::begin`], which finishes it when dropped, an early return on an error included.
//!
//! ```
//! use std::sync::Mutex;
//! use onnx_shallow::progress::{Progress, Stage};
//!
//! /// Logs each stage as it begins.
//! #[derive(Default)]
//! struct Log(Mutex<Vec<String>>);
//!
//! impl Progress for Log {
//!     fn begin(&self, label: &str, steps: Option<u64>) {
//!         self.0.lock().unwrap().push(format!("{label} ({steps:?} steps)"));
//!     }
//! }
//!
//! let log = Log::default();
//! let timing = Stage::begin(&log, "timing", Some(30));
//! for _ in 0..30 {
//!     timing.advance(1);
//! }
//! drop(timing);
//! assert_eq!(*log.0.lock().unwrap(), ["timing (Some(30) steps)"]);
//! ```

use std::fmt;

/// Where long work reports how far it got. Every method does nothing unless implemented.
pub trait Progress: Send + Sync {
    /// A stage of `steps` steps begins; `None` when it counts none.
    fn begin(&self, _label: &str, _steps: Option<u64>) {}
    /// `steps` more steps of the innermost stage are done.
    fn advance(&self, _steps: u64) {}
    /// What the innermost stage is doing now, in place of its label.
    fn message(&self, _text: &str) {}
    /// The innermost stage is over.
    fn finish(&self) {}
}

/// Tells nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {}

impl fmt::Debug for dyn Progress {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Progress")
    }
}

/// A stage begun on a [`Progress`], finished when dropped.
pub struct Stage<'p> {
    progress: &'p dyn Progress,
}

impl<'p> Stage<'p> {
    pub fn begin(progress: &'p dyn Progress, label: &str, steps: Option<u64>) -> Stage<'p> {
        progress.begin(label, steps);
        Stage { progress }
    }

    pub fn advance(&self, steps: u64) {
        self.progress.advance(steps);
    }

    pub fn message(&self, text: &str) {
        self.progress.message(text);
    }
}

impl Drop for Stage<'_> {
    fn drop(&mut self) {
        self.progress.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records every call.
    #[derive(Default)]
    struct Calls(Mutex<Vec<String>>);

    impl Progress for Calls {
        fn begin(&self, label: &str, steps: Option<u64>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("begin {label} {steps:?}"));
        }
        fn advance(&self, steps: u64) {
            self.0.lock().unwrap().push(format!("advance {steps}"));
        }
        fn finish(&self) {
            self.0.lock().unwrap().push("finish".into());
        }
    }

    #[test]
    fn a_stage_is_finished_when_an_error_returns_early() {
        let calls = Calls::default();
        let fails = || -> Result<(), ()> {
            let stage = Stage::begin(&calls, "work", Some(2));
            stage.advance(1);
            Err(())?;
            stage.advance(1);
            Ok(())
        };
        assert!(fails().is_err());
        assert_eq!(
            *calls.0.lock().unwrap(),
            ["begin work Some(2)", "advance 1", "finish"]
        );
    }
}
