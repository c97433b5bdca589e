//! What `bench` reports: a table with one row per model and one for their ratio, the CI
//! gate's verdict, and the JSON.

use std::path::Path;

use serde_json::{Value, json};

use crate::report::stats::human;
use crate::report::{aligned, json};
use crate::runtime::bench::{Benchmark, INPUT_SEED};

/// A benchmark of model files, judged against `--max-ratio` when one is given.
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
        format!("{}tract, {rounds}, inputs {}\n", aligned(&rows, 1), self.shapes())
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
                "options": self.options,
                "models": models,
                "ratio": self.benchmark.ratio,
                "rounds": self.benchmark.rounds,
                "gate": self.max_ratio.map(|max| json!({ "max_ratio": max, "pass": self.passed() })),
            }),
        )
    }
}
