//! What the passes' tests share: small models, running one pass, counting operators,
//! and the numeric oracle (tract, signed random inputs).

use crate::ir::builder::ModelBuilder;
use crate::ir::{Attributes, Model, Tensor};
use crate::passes::{Ctx, Pass, PassStats};
use crate::testing::max_relative_error;

/// The relative error every exact rewrite stays within.
pub(crate) const EXACT: f64 = 1e-4;

pub(crate) fn model(builder: ModelBuilder) -> Model {
    Model::from_proto(builder.build()).expect("a valid test model")
}

/// Runs `pass` on a copy of `model`.
pub(crate) fn rewritten(pass: &dyn Pass, model: &Model) -> (Model, PassStats) {
    let mut after = model.clone();
    let done = pass
        .run(&mut after.graph, &mut Ctx::default())
        .expect("the pass runs");
    (after, done.stats)
}

pub(crate) fn count(model: &Model, op: &str) -> usize {
    model.graph.nodes().filter(|(_, n)| n.op() == op).count()
}

/// Runs `pass` and asserts that it changed something and kept the outputs (tract,
/// signed random inputs of `dims`) within [`EXACT`].
pub(crate) fn assert_exact(pass: &dyn Pass, before: &Model, dims: &[Vec<usize>]) -> Model {
    let (after, stats) = rewritten(pass, before);
    assert!(stats.patches > 0, "{} did not fire", pass.name());
    let error = max_relative_error(before, &after, dims, 7);
    assert!(error <= EXACT, "{}: relative error {error:e}", pass.name());
    after
}

/// Reproducible values in [-1, 1) shaped `dims`.
pub(crate) fn weights(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = crate::calib::random::Rng::new(seed);
    let n = dims.iter().product();
    let values: Vec<f32> = (0..n).map(|_| (2.0 * rng.uniform() - 1.0) as f32).collect();
    Tensor::from_f32(dims.to_vec(), &values)
}

/// Reproducible values in [0.5, 1.5), for scales and variances.
pub(crate) fn positive(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = crate::calib::random::Rng::new(seed);
    let n = dims.iter().product();
    let values: Vec<f32> = (0..n).map(|_| (0.5 + rng.uniform()) as f32).collect();
    Tensor::from_f32(dims.to_vec(), &values)
}

pub(crate) fn ints(dims: &[usize], values: &[i64]) -> Tensor {
    Tensor::from_i64(dims.to_vec(), values)
}

/// Conv attributes with explicit pads and the given group.
pub(crate) fn conv_attrs(pads: &[i64], strides: &[i64], group: i64) -> Attributes {
    Attributes::default()
        .with_ints("pads", pads)
        .with_ints("strides", strides)
        .with_int("group", group)
}
