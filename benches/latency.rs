//! Latency in tract (batch 1) of every shared model before and after `optimize --exact`.

use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use onnx_shallow::calib::random::{Rng, normal_array};
use onnx_shallow::ir::shape::PinnedShapes;
use onnx_shallow::runtime::Session;
use onnx_shallow::{Cost, Model, Options, calib};

fn shared_models() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipping: {} is absent", dir.display());
        return Vec::new();
    };
    let mut models: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    models
}

/// Batch 1; the PP-OCR classifier's free H×W at its 48×192.
fn pins(model: &Model) -> PinnedShapes {
    let text_line = model
        .graph
        .runtime_inputs()
        .any(|v| model.graph.value(v).name == "x")
        && calib::sample_dims(model, &PinnedShapes::default()).is_err();
    if text_line {
        [("x".to_string(), vec![1, 3, 48, 192])].into()
    } else {
        PinnedShapes::default()
    }
}

fn bench_model(c: &mut Criterion, name: &str, model: &Model, pinned: &PinnedShapes) {
    let dims: Vec<Vec<usize>> = calib::sample_dims(model, pinned)
        .unwrap()
        .into_iter()
        .map(|d| [vec![1], d].concat())
        .collect();
    let mut rng = Rng::new(0);
    let inputs: Vec<_> = dims.iter().map(|d| normal_array(d, &mut rng)).collect();
    let session = Session::new(model, &dims).unwrap();
    c.bench_function(name, |b| b.iter(|| session.run(&inputs).unwrap()));
}

fn latency(c: &mut Criterion) {
    for path in shared_models() {
        let stem = path
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .split('_')
            .take(2)
            .collect::<Vec<_>>()
            .join("_");
        let original = onnx_shallow::load(&path).unwrap();
        let pinned = pins(&original);
        let options = Options {
            pinned: pinned.clone(),
            cost: Cost::Macs,
            ..Options::default()
        };
        let (optimized, _) = onnx_shallow::optimize(original.clone(), &options).unwrap();
        bench_model(c, &format!("{stem}/before"), &original, &pinned);
        bench_model(c, &format!("{stem}/after"), &optimized, &pinned);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = latency
}
criterion_main!(benches);
