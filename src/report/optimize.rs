//! The JSON report of an `optimize` run: the [`Report`] of the run (every field it has,
//! so a field added there reaches the file), the verification, the fidelity to the
//! original and the latency before and after.

use std::path::Path;

use serde_json::{Value, json};

use crate::Report;
use crate::report::json;
use crate::report::verify::Verification;
use crate::runtime::bench::Benchmark;
use crate::runtime::compare::Comparison;

/// One `optimize` run, for its JSON report.
pub struct OptimizeRun<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    /// The options as given on the command line.
    pub options: Value,
    /// Seed of the random verification inputs.
    pub seed: u64,
    pub report: &'a Report,
    /// The output against the model the folds started from (the check that decides
    /// whether it is written).
    pub verification: &'a Verification<'a>,
    /// The output against the original, on the same inputs.
    pub fidelity: &'a Comparison,
    /// Both models timed against each other.
    pub latency: &'a Benchmark,
}

impl OptimizeRun<'_> {
    /// The `optimize` document (see `docs/report.schema.json`).
    pub fn to_json(&self) -> Value {
        let latency = self.latency.pair().expect("both models were timed");
        let mut verification = self.verification.summary();
        verification["against"] = json!(match self.report.fold_reference {
            Some(_) => "linearised",
            None => "original",
        });
        let verified = self.report.verified.as_ref();
        if let Some(in_engine) = verified.and_then(|v| v.in_engine.as_ref()) {
            verification["in_engine"] = json::value(in_engine);
        }
        let mut doc = json::document("optimize", json::value(self.report));
        let fields = [
            ("input", json!(self.input.display().to_string())),
            ("output", json!(self.output.display().to_string())),
            ("seed", json!(self.seed)),
            ("options", self.options.clone()),
            ("verification", verification),
            ("fidelity", json::value(self.fidelity)),
            (
                "latency",
                json!({
                    "before": latency.a,
                    "after": latency.b,
                    "ratio": latency.ratio,
                    "pairs": latency.pairs,
                    "engine": self.latency.engine,
                }),
            ),
        ];
        for (key, value) in fields {
            doc[key] = value;
        }
        doc
    }
}
