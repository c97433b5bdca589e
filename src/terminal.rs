//! The command line's progress bars on stderr: the library's stages drawn with
//! indicatif, one line each, nested stages under their parent. Nothing is drawn when
//! stderr is not a terminal (a pipe, a file, CI logs).

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use onnx_shallow::progress::Progress;

/// How often a spinner redraws itself while the work gives no news.
const SPINNER_TICK: Duration = Duration::from_millis(120);

/// Bars on stderr: a stage of counted steps is a bar (`label [####    ] 12/30 3s, ~5s
/// left`, the estimate from the rate so far), any other a spinner (`⠋ label 0:02`).
pub struct Bars {
    display: MultiProgress,
    /// The stages begun and not finished, innermost last.
    stages: Mutex<Vec<ProgressBar>>,
}

impl Bars {
    pub fn stderr() -> Bars {
        Bars {
            display: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            stages: Mutex::new(Vec::new()),
        }
    }

    fn innermost(&self, update: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.stages().last() {
            update(bar);
        }
    }

    fn stages(&self) -> std::sync::MutexGuard<'_, Vec<ProgressBar>> {
        self.stages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Progress for Bars {
    fn begin(&self, label: &str, steps: Option<u64>) {
        let bar = match steps {
            Some(steps) => {
                let style = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} {elapsed}, ~{eta} left",
                )
                .expect("a valid template")
                .progress_chars("#>-");
                ProgressBar::new(steps).with_style(style)
            }
            None => {
                let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .expect("a valid template");
                ProgressBar::new_spinner().with_style(style)
            }
        };
        let bar = self.display.add(bar);
        bar.set_message(label.to_string());
        if steps.is_none() {
            bar.enable_steady_tick(SPINNER_TICK);
        }
        self.stages().push(bar);
    }

    fn advance(&self, steps: u64) {
        self.innermost(|bar| bar.inc(steps));
    }

    fn message(&self, text: &str) {
        self.innermost(|bar| bar.set_message(text.to_string()));
    }

    fn finish(&self) {
        if let Some(bar) = self.stages().pop() {
            bar.finish_and_clear();
        }
    }
}
