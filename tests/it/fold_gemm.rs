//! `fold_gemm_chains` on the real digits MLP (Flatten → Gemm → Relu → Gemm → Relu → Gemm
//! → Relu → Gemm): with its ReLUs bypassed and marked linearised, the four Gemms fold
//! into one, whatever the cost model says, and compute what the bypassed model computes.

use crate::common;

use std::sync::Arc;

use common::count;

use onnx_shallow::Model;
use onnx_shallow::ir::{OpKind, Patch};
use onnx_shallow::passes::{self, Ctx};
use onnx_shallow::runtime::cost::{Cost, Verdict};

const DIGITS_MLP: &str = "models/digits_mlp_sklearn-digits_op13.onnx";

/// Shunts every Relu's output to its input; returns the names of the values that now
/// carry what the Relus read.
fn bypass_relus(model: &mut Model) -> Vec<String> {
    let graph = &model.graph;
    let relus: Vec<_> = graph
        .nodes()
        .filter(|(_, n)| n.kind == OpKind::Relu)
        .map(|(_, n)| (n.input(0).unwrap(), n.output(0).unwrap()))
        .collect();
    let names = relus
        .iter()
        .map(|&(x, _)| graph.value(x).name.clone())
        .collect();
    let mut patch = Patch::new("test >> bypass relus");
    for (x, y) in relus {
        patch.shunt(y, x);
    }
    model.graph.apply(patch).unwrap();
    names
}

#[test]
fn digits_mlp_with_its_relus_bypassed_folds_into_one_gemm() {
    let Some(path) = common::shared(DIGITS_MLP) else {
        return;
    };
    let mut bypassed = onnx_shallow::load(&path).unwrap();
    let linearised = bypass_relus(&mut bypassed);
    assert_eq!((count(&bypassed, "Relu"), count(&bypassed, "Gemm")), (0, 4));

    // Folding is slower by this verdict: only the linearised values force it.
    let slower = |_: &Model, _: &Model| Verdict::exact(1.0, 2.0);
    let mut ctx = Ctx::default();
    ctx.cost.replace(Cost::Custom(Arc::new(slower)).into());
    ctx.linearised.extend(linearised);
    let pass = passes::folding()
        .into_iter()
        .find(|p| p.name() == "fold_gemm_chains")
        .expect("fold_gemm_chains is a folding pass");
    let mut folded = bypassed.clone();
    let done = pass.run(&mut folded.graph, &mut ctx).unwrap();

    assert_eq!(done.stats.patches, 1);
    assert_eq!((count(&folded, "Gemm"), count(&folded, "Flatten")), (1, 1));
    let folds = &done.folds;
    assert_eq!(folds[0].sources.len(), 4);
    assert!(folds[0].forced && folds[0].exact);

    let dims = common::input_dims(&bypassed, 3);
    let error = common::max_relative_error(&bypassed, &folded, &dims, 5);
    assert!(error <= 1e-4, "relative error {error:e}");
}
