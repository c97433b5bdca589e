//! What `verify` reports: a table with one row per output, a one-line verdict, and the
//! JSON for CI.
//!
//! ```
//! use onnx_shallow::report::verify::Verification;
//! use onnx_shallow::runtime::compare::{Comparison, OutputComparison, Tolerance};
//! let output = OutputComparison {
//!     name: "logits".into(),
//!     shape: vec![4, 10],
//!     max_abs_error: 0.0,
//!     max_rel_error: 0.0,
//!     cosine: 1.0,
//!     agreement: Some(1.0),
//!     pairwise_flips: Some(0.0),
//!     intervals: None,
//!     outcomes: Default::default(),
//! };
//! let comparison = Comparison {
//!     samples: 4,
//!     inputs: "random 4 seed 0".into(),
//!     groups: None,
//!     confidence: None,
//!     outputs: vec![output],
//! };
//! let verification = Verification {
//!     reference: "a.onnx".as_ref(),
//!     candidate: "b.onnx".as_ref(),
//!     comparison: &comparison,
//!     tolerance: &Tolerance::default(),
//! };
//! assert!(verification.verdict().starts_with("PASS"));
//! assert_eq!(verification.to_json()["pass"], true);
//! ```

use std::path::Path;

use serde_json::{Value, json};

use crate::report::{aligned, json, percent};
use crate::runtime::compare::{Comparison, OutputComparison, Tolerance};

/// A comparison of two model files, judged against a tolerance.
pub struct Verification<'a> {
    pub reference: &'a Path,
    pub candidate: &'a Path,
    pub comparison: &'a Comparison,
    pub tolerance: &'a Tolerance,
}

impl Verification<'_> {
    pub fn passed(&self) -> bool {
        self.comparison.within(self.tolerance)
    }

    /// An aligned table: output, shape, max abs, max rel, cosine, top-1 agreement (`-`
    /// for outputs that have none), pass/FAIL.
    pub fn table(&self) -> String {
        let header = [
            "output",
            "shape",
            "max abs",
            "max rel",
            "cosine",
            "top-1 agree",
            "result",
        ]
        .map(String::from)
        .to_vec();
        let rows: Vec<Vec<String>> = std::iter::once(header)
            .chain(
                self.comparison
                    .outputs
                    .iter()
                    .map(|output| self.row(output)),
            )
            .collect();
        aligned(&rows, 2)
    }

    fn row(&self, output: &OutputComparison) -> Vec<String> {
        vec![
            output.name.clone(),
            format!("{:?}", output.shape),
            format!("{:.3e}", output.max_abs_error),
            format!("{:.3e}", output.max_rel_error),
            format!("{:.6}", output.cosine),
            output.agreement.map_or("-".into(), |agreement| {
                let interval = output.intervals.as_ref().and_then(|i| i.agreement);
                percent(agreement, interval)
            }),
            if output.within(self.tolerance) {
                "pass"
            } else {
                "FAIL"
            }
            .into(),
        ]
    }

    /// `PASS: …` or `FAIL: …`, naming the failing outputs, the tolerance and the inputs.
    pub fn verdict(&self) -> String {
        let failing: Vec<&str> = self
            .comparison
            .outputs
            .iter()
            .filter(|output| !output.within(self.tolerance))
            .map(|output| output.name.as_str())
            .collect();
        let context = format!(
            "{} on {} samples ({})",
            describe(self.tolerance),
            self.comparison.samples,
            self.comparison.inputs
        );
        match failing.is_empty() {
            true => format!(
                "PASS: {} within {context}",
                count(self.comparison.outputs.len(), "output")
            ),
            false => format!("FAIL: {} not within {context}", failing.join(", ")),
        }
    }

    /// What the intervals in the table rest on, when they were estimated.
    pub fn intervals_basis(&self) -> Option<String> {
        let confidence = self.comparison.confidence?;
        let resampled = match self.comparison.groups {
            Some(groups) => format!("from {groups} groups, resampled whole"),
            None => "resampled one by one (the inputs have no groups)".to_string(),
        };
        Some(format!(
            "intervals at {} %: {} samples {resampled}",
            100.0 * confidence,
            self.comparison.samples
        ))
    }

    /// The `verify` document: [`json::document`]'s header and [`Verification::summary`].
    pub fn to_json(&self) -> Value {
        json::document("verify", self.summary())
    }

    /// `reference`, `candidate`, `inputs`, `samples`, `tolerance`, `outputs` (each
    /// [`OutputComparison`] plus its `pass`) and `pass`. Errors that are not finite (a NaN
    /// output, a reference that is all zeros) are `null`.
    pub fn summary(&self) -> Value {
        let outputs: Vec<Value> = self
            .comparison
            .outputs
            .iter()
            .map(|output| {
                let mut entry = json!(output);
                entry["pass"] = json!(output.within(self.tolerance));
                entry
            })
            .collect();
        json!({
            "reference": self.reference.display().to_string(),
            "candidate": self.candidate.display().to_string(),
            "inputs": self.comparison.inputs,
            "samples": self.comparison.samples,
            "groups": self.comparison.groups,
            "confidence": self.comparison.confidence,
            "tolerance": self.tolerance,
            "outputs": outputs,
            "pass": self.passed(),
        })
    }
}

fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// `rtol 1e-4, atol 1e-6, top-1 agreement ≥ 99 %`.
fn describe(tolerance: &Tolerance) -> String {
    let mut parts = vec![format!("rtol {:e}", tolerance.rtol)];
    parts.extend(tolerance.atol.map(|atol| format!("atol {atol:e}")));
    parts.extend(
        tolerance
            .min_agreement
            .map(|min| format!("top-1 agreement ≥ {} %", 100.0 * min)),
    );
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(name: &str, max_rel_error: f64, agreement: Option<f64>) -> OutputComparison {
        OutputComparison {
            name: name.into(),
            shape: vec![8, 10],
            max_abs_error: max_rel_error * 2.0,
            max_rel_error,
            cosine: 0.99,
            agreement,
            pairwise_flips: None,
            intervals: None,
            outcomes: Default::default(),
        }
    }

    fn verify(
        outputs: Vec<OutputComparison>,
        tolerance: &Tolerance,
        check: impl FnOnce(&Verification),
    ) {
        let comparison = Comparison {
            samples: 8,
            inputs: "random 8 seed 1".into(),
            groups: None,
            confidence: None,
            outputs,
        };
        check(&Verification {
            reference: "ref.onnx".as_ref(),
            candidate: "cand.onnx".as_ref(),
            comparison: &comparison,
            tolerance,
        })
    }

    #[test]
    fn table_has_one_aligned_row_per_output() {
        let outputs = vec![
            output("logits", 0.0, Some(1.0)),
            output("a_long_output_name", 0.5, None),
        ];
        verify(outputs, &Tolerance::default(), |verification| {
            let table = verification.table();
            let lines: Vec<&str> = table.lines().collect();
            assert_eq!(lines.len(), 3, "{table}");
            assert!(
                lines
                    .iter()
                    .all(|line| line.chars().count() == lines[0].chars().count()),
                "{table}"
            );
            assert!(
                lines[1].starts_with("logits ")
                    && lines[1].contains("100.00 %")
                    && lines[1].ends_with("pass"),
                "{table}"
            );
            assert!(
                lines[2].contains("5.000e-1")
                    && lines[2].contains(" - ")
                    && lines[2].ends_with("FAIL"),
                "{table}"
            );
        });
    }

    #[test]
    fn verdict_names_the_failing_outputs_and_the_tolerance() {
        let tolerance = Tolerance {
            rtol: 1e-3,
            atol: None,
            min_agreement: Some(0.99),
        };
        verify(
            vec![
                output("logits", 1e-4, Some(0.5)),
                output("boxes", 1e-4, None),
            ],
            &tolerance,
            |verification| {
                assert_eq!(
                    verification.verdict(),
                    "FAIL: logits not within rtol 1e-3, top-1 agreement ≥ 99 % on 8 samples (random 8 seed 1)"
                );
            },
        );
        verify(
            vec![output("logits", 0.0, Some(1.0))],
            &Tolerance::default(),
            |verification| {
                assert_eq!(
                    verification.verdict(),
                    "PASS: 1 output within rtol 1e-4 on 8 samples (random 8 seed 1)"
                );
            },
        );
    }

    #[test]
    fn json_has_the_documented_keys_and_null_for_infinite_errors() {
        verify(
            vec![output("logits", f64::INFINITY, Some(1.0))],
            &Tolerance::default(),
            |verification| {
                let json = verification.to_json();
                assert_eq!(json["schema_version"], json::SCHEMA_VERSION);
                assert_eq!(json["command"], "verify");
                assert_eq!(
                    (json["reference"].as_str(), json["candidate"].as_str()),
                    (Some("ref.onnx"), Some("cand.onnx"))
                );
                assert_eq!(json["inputs"], "random 8 seed 1");
                assert_eq!(json["outputs"][0]["name"], "logits");
                assert_eq!(json["outputs"][0]["shape"], json!([8, 10]));
                assert!(json["outputs"][0]["max_rel_error"].is_null());
                assert_eq!(json["outputs"][0]["pass"], false);
                assert_eq!(json["tolerance"]["rtol"], 1e-4);
                assert_eq!(json["pass"], false);
            },
        );
    }
}
