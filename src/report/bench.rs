//! What `bench` reports: a table with one row per model and one for their ratio, the CI
//! gate's verdict, and the JSON.

use std::path::Path;

use serde_json::{Value, json};

use crate::report::stats::human;
use crate::report::{aligned, json};
use crate::runtime::bench::{Benchmark, INPUT_SEED};

/// A benchmark of model files, judged against a maximum ratio when one is given.
pub struct BenchRun<'a> {
    /// The model files, in the order they were given (the ratio is second / first).
    pub models: &'a [&'a Path],
    /// The options as given on the command line.
    pub options: Value,
    pub benchmark: &'a Benchmark,
    pub max_ratio: Option<f64>,
}

impl BenchRun<'_> {
    /// The median ratio is within `max_ratio` (always, without one).
    pub fn passed(&self) -> bool {
        match (self.max_ratio, self.benchmark.ratio) {
            (Some(max), Some(ratio)) => ratio.median <= max,
            _ => true,
        }
    }

    /// `model  median  p10  p90  peak heap  kept heap`, then the ratio's row.
    pub fn table(&self) -> String {
        let ms = |s: f64| format!("{:.3} ms", s * 1e3);
        let header = ["model", "median", "p10", "p90", "peak heap", "kept heap"];
        let mut rows = vec![header.map(String::from).to_vec()];
        for (path, model) in self.models.iter().zip(&self.benchmark.models) {
            let heap = |bytes: Option<u64>| bytes.map_or("-".into(), |b| human(b as f64) + "B");
            rows.push(vec![
                path.display().to_string(),
                ms(model.latency.median),
                ms(model.latency.p10),
                ms(model.latency.p90),
                heap(model.heap.map(|h| h.peak_bytes)),
                heap(model.heap.map(|h| h.retained_bytes)),
            ]);
        }
        if let Some(ratio) = self.benchmark.ratio {
            let x = |r: f64| format!("{r:.3}×");
            rows.push(vec![
                "ratio second / first".into(),
                x(ratio.median),
                x(ratio.p10),
                x(ratio.p90),
                String::new(),
                String::new(),
            ]);
        }
        let rounds = match self.benchmark.ratio {
            Some(_) => format!("{} interleaved pairs", self.benchmark.rounds),
            None => format!("{} runs", self.benchmark.rounds),
        };
        format!(
            "{}{}, {rounds}, inputs {}\n",
            aligned(&rows, 1),
            self.benchmark.engine,
            self.shapes()
        )
    }

    /// `input:[1, 3, 224, 224]` for each input of each model, each once.
    fn shapes(&self) -> String {
        let mut shapes: Vec<String> = Vec::new();
        for input in self.benchmark.models.iter().flat_map(|m| &m.inputs) {
            let shape = format!("{}:{:?}", input.name, input.dims);
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
        shapes.join(" ")
    }

    /// `PASS: …` or `FAIL: …` when there is a gate.
    pub fn verdict(&self) -> Option<String> {
        let (max, ratio) = (self.max_ratio?, self.benchmark.ratio?);
        Some(match self.passed() {
            true => format!("PASS: median ratio {:.3} ≤ {max}", ratio.median),
            false => format!("FAIL: median ratio {:.3} > {max}", ratio.median),
        })
    }

    /// The `bench` document (see `docs/report.schema.json`).
    pub fn to_json(&self) -> Value {
        let models: Vec<Value> = self
            .models
            .iter()
            .zip(&self.benchmark.models)
            .map(|(path, model)| {
                json!({
                    "path": path.display().to_string(),
                    "inputs": model.inputs,
                    "latency": model.latency,
                    "heap": model.heap,
                })
            })
            .collect();
        json::document(
            "bench",
            json!({
                "seed": INPUT_SEED,
                "engine": self.benchmark.engine,
                "options": self.options,
                "models": models,
                "ratio": self.benchmark.ratio,
                "rounds": self.benchmark.rounds,
                "gate": self.max_ratio.map(|max| json!({ "max_ratio": max, "pass": self.passed() })),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Engine;
    use crate::runtime::bench::{InputDims, ModelLatency, Timing};

    fn run_with(ratio: f64, max_ratio: Option<f64>, check: impl FnOnce(&BenchRun)) {
        let timing = |median| Timing {
            median,
            p10: median,
            p90: median,
            median_standard_error: 0.0,
        };
        let model = |median| ModelLatency {
            latency: timing(median),
            heap: None,
            inputs: vec![InputDims {
                name: "x".into(),
                dims: vec![1, 3],
            }],
        };
        let benchmark = Benchmark {
            engine: Engine::Tract.info().unwrap(),
            models: vec![model(0.002), model(0.002 * ratio)],
            ratio: Some(timing(ratio)),
            rounds: 50,
        };
        check(&BenchRun {
            models: &["a.onnx".as_ref(), "b.onnx".as_ref()],
            options: json!({}),
            benchmark: &benchmark,
            max_ratio,
        });
    }

    #[test]
    fn the_gate_passes_up_to_its_ratio_and_fails_above() {
        run_with(0.9, Some(0.9), |run| {
            assert!(run.passed());
            assert_eq!(run.verdict().unwrap(), "PASS: median ratio 0.900 ≤ 0.9");
            assert_eq!(
                run.to_json()["gate"],
                json!({ "max_ratio": 0.9, "pass": true })
            );
        });
        run_with(0.95, Some(0.9), |run| {
            assert!(!run.passed());
            assert_eq!(run.verdict().unwrap(), "FAIL: median ratio 0.950 > 0.9");
        });
        run_with(5.0, None, |run| {
            assert!(run.passed() && run.verdict().is_none());
            assert!(run.to_json()["gate"].is_null());
        });
    }

    #[test]
    fn the_table_has_a_row_per_model_and_one_for_the_ratio() {
        run_with(0.5, None, |run| {
            let table = run.table();
            let lines: Vec<&str> = table.lines().collect();
            assert_eq!(lines.len(), 5, "{table}");
            assert!(lines[1].starts_with("a.onnx") && lines[1].contains("2.000 ms"));
            assert!(lines[3].starts_with("ratio second / first") && lines[3].contains("0.500×"));
            assert_eq!(
                lines[4],
                "tract 0.23, 1 thread, 50 interleaved pairs, inputs x:[1, 3]"
            );
        });
    }
}
