//! The heap counter `bench` reports plan memory with, installed as this test binary's
//! allocator (as the command-line tool installs it), and the heap training holds.

use ndarray::{ArrayD, IxDyn};
use onnx_shallow::exec::{Executor, Gate, Params, Wanted};
use onnx_shallow::ir::builder::ModelBuilder;
use onnx_shallow::ir::{Attributes, Model, Tensor};
use onnx_shallow::runtime::memory::{CountingAllocator, heap_growth};

#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

const MIB: u64 = 1 << 20;

/// The counter counts every thread's allocations: this binary's tests run one at a time,
/// so that none allocates or frees inside another's window.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn peak_and_retained_heap_are_counted() {
    let _serial = one_at_a_time();
    let (kept, growth) = heap_growth(|| {
        let scratch = vec![1u8; 4 * MIB as usize];
        let mut kept = Vec::with_capacity(MIB as usize);
        kept.extend_from_slice(&scratch[..MIB as usize]);
        kept.reserve_exact(MIB as usize); // a reallocation to 2 MiB
        kept
    });
    let growth = growth.expect("the allocator is installed");
    assert_eq!(kept.capacity(), 2 * MIB as usize);
    // 4 MiB of scratch and the 2 MiB kept, at once; then the scratch is freed.
    assert!(
        (6 * MIB..6 * MIB + 4096).contains(&growth.peak_bytes),
        "{growth:?}"
    );
    assert!(
        (2 * MIB..2 * MIB + 4096).contains(&growth.retained_bytes),
        "{growth:?}"
    );
}

/// Samples, channels and side of the training steps' input.
const DIMS: [usize; 4] = [2, 8, 32, 32];

/// A 1×1 conv, a gated Relu and a global average pool: the pool's backward makes its
/// input's gradient outside the executor's buffer pool, and the gate hands it back to it.
fn conv_relu_pool() -> (Model, Gate) {
    let [_, channels, side, _] = DIMS;
    let weights: Vec<f32> = (0..channels * channels).map(|i| i as f32 / 64.0).collect();
    let (c, s) = (channels as i64, side as i64);
    let proto = ModelBuilder::new(13)
        .input("x", &[-1, c, s, s])
        .initializer(
            "w",
            Tensor::from_f32(vec![channels, channels, 1, 1], &weights),
        )
        .node("Conv", &["x", "w"], &["h"], Attributes::default())
        .node("Relu", &["h"], &["r"], Attributes::default())
        .node("GlobalAveragePool", &["r"], &["y"], Attributes::default())
        .output("y")
        .build();
    let gate = Gate {
        input: "h".into(),
        output: "r".into(),
        group: 0,
    };
    (Model::from_proto(proto).unwrap(), gate)
}

/// One training step's forward and backward pass, on a fresh input as the trainer's
/// (the teacher's outputs are new arrays every step); the gradients are dropped.
fn training_step(executor: &Executor, params: &Params<f32>) {
    let x = ArrayD::from_shape_fn(IxDyn(&DIMS), |i| (i[2] as f32 - i[3] as f32) / 32.0);
    let run = executor.forward(&[x], params, true).unwrap();
    let ones = ArrayD::ones(run.outputs[0].raw_dim());
    let wanted = Wanted {
        weights: true,
        inputs: false,
    };
    executor.backward(&run, &[ones], params, wanted).unwrap();
}

/// The heap an executor keeps between training steps is set by the model and the batch:
/// after 2 steps, 20 more keep nothing more. A buffer pool that kept every array handed
/// back would keep one more gradient of the global pool's input (64 KiB here) a step:
/// MobileNetV2 kept 4 MB a step that way, 2 GB over a 500-step fine-tune.
#[test]
fn training_steps_do_not_grow_the_heap_an_executor_keeps() {
    let _serial = one_at_a_time();
    let (model, gate) = conv_relu_pool();
    let executor = Executor::new(&model.graph, &["x".into()], &["y".into()], vec![gate]).unwrap();
    let mut params = Params::<f32>::new(&executor, &model.graph).unwrap();
    params.alpha[0] = 0.5;
    let (_, first) = heap_growth(|| (0..2).for_each(|_| training_step(&executor, &params)));
    let (_, more) = heap_growth(|| (0..20).for_each(|_| training_step(&executor, &params)));
    let (first, more) = (first.unwrap(), more.unwrap());
    let gradient_bytes = (DIMS.iter().product::<usize>() * 4) as u64;
    assert!(
        first.retained_bytes >= gradient_bytes,
        "the first steps fill the pool: {first:?}"
    );
    assert!(
        more.retained_bytes < gradient_bytes,
        "20 more steps kept {} bytes (after 2: {first:?})",
        more.retained_bytes
    );
}
