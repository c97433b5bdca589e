//! `fold_fan_out`: a linear layer whose output feeds several linear layers, and nothing
//! else, folds into each of them — when that is cheaper in total (`docs/ARCHITECTURE.md`,
//! folding rule 9, fan-out).
//!
//! Pattern: x → P → y → {C_1 → z_1, …, C_k → z_k}, k ≥ 2, every reader of y one of the
//! C_i reading it as its data input, y no graph output; P and the C_i all dense layers
//! (Gemm with `transA = 0` or MatMul by a constant) or all convolutions (or average
//! pools) → x → {C_1∘P → z_1, …, C_k∘P → z_k}.
//!
//! Algebra: `Dense::then` for dense layers (W_i·W_P, W_i·b_P + b_i); `ConvMap` for
//! convolutions (`conv::compose`, with a bias map where padding meets P's bias).
//!
//! Exactness: dense layers: exact (≤ 1e-4 relative). Convolutions: as in a conv chain,
//! exact when each C_i is unpadded or P is pointwise; otherwise only away from the
//! border, which folds only with `allow_approx_borders` and is reported with its
//! measured error.
//!
//! Profitability: P's work is no longer shared, so the fold pays when the consumers are
//! narrow (MTCNN O-Net's 256-wide trunk layer feeding heads of 2, 4 and 10 outputs:
//! 1152·16 MACs a row instead of 1152·256 + 256·16) and costs when they are wide. The
//! cost model times the whole region, P and every consumer against the k folded layers,
//! at the real dims; the fold is forced when y is a value the user linearised (the
//! activation after the trunk).
//!
//! Ordering: last, after the chain folds and `fold_conv_into_gemm` have folded each
//! branch as far as it goes on its own.

use crate::error::Result;
use crate::fold::conv::{Border, Conv2d};
use crate::fold::conv_map::ConvMap;
use crate::fold::gemm::Dense;
use crate::fold::nodes::{MAX_KERNEL, as_conv, emit_conv_map};
use crate::ir::shape::Shapes;
use crate::ir::{DataType, Graph, NodeId, OpKind, Patch, Tensor, ValueId, Wire};
use crate::passes::fold_gemm_chains::{dense_layer, emit_gemm};
use crate::passes::segments::{
    ChainShapes, Region, Replaced, Segment, apply_fold, judge_fold, reads_linearised,
    run_chain_folds, single_fold,
};
use crate::passes::{Ctx, FoldRecord, Pass, PassOutcome};

pub(crate) struct FoldFanOut;

const NAME: &str = "fold_fan_out";

/// x → producer → shared → consumers → outputs.
struct FanOut {
    input: ValueId,
    shared: ValueId,
    outputs: Vec<ValueId>,
    /// The producer, then the consumers.
    nodes: Vec<NodeId>,
    /// The consumers' names, which their folds take.
    names: Vec<String>,
    layers: Layers,
    dtype: DataType,
}

/// The producer and the consumers, of one family.
enum Layers {
    Dense {
        producer: Dense,
        consumers: Vec<Dense>,
    },
    Conv {
        producer: Conv2d,
        consumers: Vec<Conv2d>,
        input_hw: Option<[usize; 2]>,
    },
}

/// Each consumer folded with the producer, in order.
enum Folds {
    Dense(Vec<Dense>),
    Conv(Vec<ConvMap>),
}

impl Region for FanOut {
    fn input(&self) -> ValueId {
        self.input
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.nodes.clone()
    }
}

impl Pass for FoldFanOut {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, graph: &mut Graph, ctx: &mut Ctx) -> Result<PassOutcome> {
        run_chain_folds(NAME, graph, ctx, find_fan_outs, choose_fold, apply)
    }
}

fn find_fan_outs(graph: &Graph, shapes: &Shapes) -> Result<Vec<FanOut>> {
    Ok(graph
        .topological_order()?
        .into_iter()
        .filter_map(|producer| as_fan_out(graph, producer, shapes))
        .collect())
}

fn as_fan_out(graph: &Graph, producer: NodeId, shapes: &Shapes) -> Option<FanOut> {
    let node = graph.node(producer);
    let (input, shared) = (node.input(0)?, node.output(0)?);
    let consumers = sole_readers(graph, shared)?;
    let (layers, dtype) = match node.kind {
        // The folds are Gemms, which read 2-D values (a Gemm reads 2-D by definition,
        // even where inference lost the rank).
        OpKind::Gemm | OpKind::MatMul
            if shapes.get(input).rank() == Some(2) || node.kind == OpKind::Gemm =>
        {
            let (producer, dtype) = dense_layer(graph, producer, input)?;
            let consumers = consumers
                .iter()
                .map(|&c| dense_layer(graph, c, shared).map(|(map, _)| map))
                .collect::<Option<_>>()?;
            (
                Layers::Dense {
                    producer,
                    consumers,
                },
                dtype,
            )
        }
        OpKind::Conv | OpKind::AveragePool => {
            let conv = |n: NodeId| as_conv(graph, n, shapes);
            let consumers = consumers
                .iter()
                .map(|&c| conv(c).filter(|_| graph.node(c).input(0) == Some(shared)))
                .collect::<Option<_>>()?;
            let x = shapes.get(input);
            let dtype = node
                .input(1)
                .and_then(|w| graph.constant(w))
                .map_or(DataType::Float, Tensor::dtype);
            let layers = Layers::Conv {
                producer: conv(producer)?,
                consumers,
                input_hw: x.dim(2).zip(x.dim(3)).map(|(h, w)| [h, w]),
            };
            (layers, dtype)
        }
        _ => return None,
    };
    let outputs = consumers
        .iter()
        .map(|&c| graph.node(c).output(0))
        .collect::<Option<_>>()?;
    Some(FanOut {
        input,
        shared,
        outputs,
        names: consumers
            .iter()
            .map(|&c| graph.node(c).name.clone())
            .collect(),
        nodes: [vec![producer], consumers].concat(),
        layers,
        dtype,
    })
}

/// The two or more nodes that read `value`, each once, when nothing else does.
fn sole_readers(graph: &Graph, value: ValueId) -> Option<Vec<NodeId>> {
    let users = graph.users(value);
    let mut readers = users.to_vec();
    readers.sort();
    readers.dedup();
    let each_once = readers.len() == users.len();
    (each_once && readers.len() >= 2 && !graph.is_output(value)).then_some(readers)
}

/// Each consumer folded with the producer; `None` when one does not compose, or is
/// exact only away from the border and that is not allowed.
fn folds(fan_out: &FanOut, ctx: &Ctx) -> Option<Folds> {
    match &fan_out.layers {
        Layers::Dense {
            producer,
            consumers,
        } => consumers
            .iter()
            .map(|c| producer.then(c))
            .collect::<Option<_>>()
            .map(Folds::Dense),
        Layers::Conv {
            producer,
            consumers,
            input_hw,
        } => {
            let trunk = ConvMap::identity(producer.in_channels, *input_hw)
                .then(producer)
                .ok()?;
            let allowed = |m: &ConvMap| {
                (m.border != Border::InteriorOnly || ctx.folding.allow_approx_borders)
                    && m.conv.kernel.iter().all(|&k| k <= MAX_KERNEL)
            };
            consumers
                .iter()
                .map(|c| trunk.then(c).ok().filter(allowed))
                .collect::<Option<_>>()
                .map(Folds::Conv)
        }
    }
}

/// Adds every folded consumer reading `x`, named after the consumer; returns their outputs.
fn emit(patch: &mut Patch, x: Wire, fan_out: &FanOut, folds: &Folds) -> Result<Vec<Wire>> {
    let names = fan_out.names.iter().map(|n| format!("{n}.folded"));
    match folds {
        Folds::Dense(maps) => maps
            .iter()
            .zip(names)
            .map(|(map, name)| emit_gemm(patch, x, map, fan_out.dtype, &name))
            .collect(),
        Folds::Conv(maps) => maps
            .iter()
            .zip(names)
            .map(|(map, name)| emit_conv_map(patch, x, map, fan_out.dtype, &name))
            .collect(),
    }
}

fn choose_fold(
    graph: &Graph,
    fan_out: &FanOut,
    shapes: &ChainShapes,
    ctx: &Ctx,
    _: &mut PassOutcome,
) -> Result<Vec<Segment<Folds>>> {
    let Some(folds) = folds(fan_out, ctx) else {
        return Ok(Vec::new());
    };
    let forced = reads_linearised(graph, ctx, [fan_out.shared]);
    let ends = (fan_out.input, fan_out.outputs.as_slice());
    let verdict = judge_fold(graph, ends, &shapes.analysed, forced, ctx, |p, x, _| {
        emit(p, x, fan_out, &folds)
    })?;
    Ok(single_fold(folds, verdict, forced, ctx))
}

fn apply(
    graph: &mut Graph,
    fan_out: &FanOut,
    segment: &Segment<Folds>,
    shapes: &ChainShapes,
) -> Result<FoldRecord> {
    let exact = match &segment.fold {
        Folds::Dense(_) => true,
        Folds::Conv(maps) => maps.iter().all(|m| m.border == Border::Exact),
    };
    let replaced = Replaced {
        input: fan_out.input,
        outputs: &fan_out.outputs,
        nodes: &fan_out.nodes,
    };
    apply_fold(
        graph,
        NAME,
        replaced,
        segment,
        exact,
        &shapes.analysed,
        |p, x, _| emit(p, x, fan_out, &segment.fold),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model};
    use crate::passes::FoldOptions;
    use crate::passes::segments::testing::{run_with, verdict};
    use crate::passes::test_models::{EXACT, conv_attrs, count, model, weights};
    use crate::testing::max_relative_error;

    fn gemm() -> Attributes {
        Attributes::default().with_int("transB", 1)
    }

    /// x[·, 12] → Gemm trunk [16, 12] → t → heads of 2, 4 and 3 outputs (the last a
    /// MatMul); `extra` adds nodes.
    fn trunk_and_heads(extra: impl FnOnce(ModelBuilder) -> ModelBuilder) -> Model {
        let builder = ModelBuilder::new(13)
            .input("x", &[-1, 12])
            .initializer("wt", weights(&[16, 12], 1))
            .initializer("bt", weights(&[16], 2))
            .initializer("w1", weights(&[2, 16], 3))
            .initializer("b1", weights(&[2], 4))
            .initializer("w2", weights(&[4, 16], 5))
            .initializer("w3", weights(&[16, 3], 6))
            .node("Gemm", &["x", "wt", "bt"], &["t"], gemm())
            .node("Gemm", &["t", "w1", "b1"], &["y1"], gemm())
            .node("Gemm", &["t", "w2"], &["y2"], gemm())
            .node("MatMul", &["t", "w3"], &["y3"], Attributes::default())
            .output("y1")
            .output("y2")
            .output("y3");
        model(extra(builder))
    }

    #[test]
    fn fires_on_a_dense_trunk_feeding_three_heads_and_stays_exact() {
        let before = trunk_and_heads(|b| b);
        let (after, done) = run_with(&FoldFanOut, &before, verdict(2.0, 1.0), &[]);
        assert_eq!((count(&after, "Gemm"), count(&after, "MatMul")), (3, 0));
        let folds = &done.folds;
        assert_eq!(folds.len(), 1);
        assert_eq!(folds[0].sources.len(), 4);
        assert_eq!(
            folds[0].result,
            "Gemm_1.folded, Gemm_2.folded, MatMul_3.folded"
        );
        assert!(folds[0].exact && !folds[0].forced);
        let error = max_relative_error(&before, &after, &[vec![5, 12]], 1);
        assert!(error <= EXACT, "relative error {error:e}");
    }

    #[test]
    fn skips_a_fold_the_cost_model_says_is_slower_unless_linearised() {
        let before = trunk_and_heads(|b| b);
        let (after, done) = run_with(&FoldFanOut, &before, verdict(1.0, 1.2), &[]);
        assert_eq!(count(&after, "Gemm"), 3);
        assert!(done.folds.is_empty());
        let (after, done) = run_with(&FoldFanOut, &before, verdict(1.0, 1.2), &["t"]);
        assert_eq!((count(&after, "Gemm"), count(&after, "MatMul")), (3, 0));
        assert!(done.folds[0].forced);
    }

    #[test]
    fn skips_a_trunk_also_read_by_a_non_linear_node_or_as_an_output() {
        let read_by_relu = trunk_and_heads(|b| {
            b.node("Relu", &["t"], &["r"], Attributes::default())
                .output("r")
        });
        let an_output = trunk_and_heads(|b| b.output("t"));
        for before in [read_by_relu, an_output] {
            let (after, done) = run_with(&FoldFanOut, &before, verdict(2.0, 1.0), &["t"]);
            assert_eq!(count(&after, "MatMul"), 1);
            assert!(done.folds.is_empty());
        }
    }

    #[test]
    fn skips_a_matmul_trunk_on_more_than_two_axes() {
        let before = model(
            ModelBuilder::new(13)
                .input("x", &[-1, 3, 12])
                .initializer("wt", weights(&[12, 16], 1))
                .initializer("w1", weights(&[16, 2], 2))
                .initializer("w2", weights(&[16, 4], 3))
                .node("MatMul", &["x", "wt"], &["t"], Attributes::default())
                .node("MatMul", &["t", "w1"], &["y1"], Attributes::default())
                .node("MatMul", &["t", "w2"], &["y2"], Attributes::default())
                .output("y1")
                .output("y2"),
        );
        let (after, done) = run_with(&FoldFanOut, &before, verdict(2.0, 1.0), &["t"]);
        assert_eq!(count(&after, "MatMul"), 3);
        assert!(done.folds.is_empty());
    }

    /// x[·, 4, 7, 7] → Conv (`trunk` k×k, pads k/2, bias) → t → two padded 3×3 convs.
    fn conv_trunk(trunk: usize) -> Model {
        let pad = (trunk / 2) as i64;
        model(
            ModelBuilder::new(13)
                .input("x", &[-1, 4, 7, 7])
                .initializer("wt", weights(&[6, 4, trunk, trunk], 1))
                .initializer("bt", weights(&[6], 2))
                .initializer("w1", weights(&[3, 6, 3, 3], 3))
                .initializer("w2", weights(&[5, 6, 3, 3], 4))
                .initializer("b2", weights(&[5], 5))
                .node(
                    "Conv",
                    &["x", "wt", "bt"],
                    &["t"],
                    conv_attrs(&[pad; 4], &[1, 1], 1),
                )
                .node(
                    "Conv",
                    &["t", "w1"],
                    &["y1"],
                    conv_attrs(&[1; 4], &[1, 1], 1),
                )
                .node(
                    "Conv",
                    &["t", "w2", "b2"],
                    &["y2"],
                    conv_attrs(&[1; 4], &[1, 1], 1),
                )
                .output("y1")
                .output("y2"),
        )
    }

    #[test]
    fn fires_on_a_pointwise_conv_trunk_exactly_with_bias_maps() {
        let before = conv_trunk(1);
        let (after, done) = run_with(&FoldFanOut, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Conv"), 2);
        assert!(done.folds[0].exact);
        let error = max_relative_error(&before, &after, &[vec![2, 4, 7, 7]], 2);
        assert!(error <= EXACT, "relative error {error:e}");
    }

    #[test]
    fn a_padded_trunk_folds_only_with_approximate_borders_and_reports_its_error() {
        let before = conv_trunk(3);
        let (after, done) = run_with(&FoldFanOut, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Conv"), 3);
        assert!(done.folds.is_empty());
        let mut ctx = Ctx {
            cost: verdict(2.0, 1.0).into(),
            folding: FoldOptions {
                allow_approx_borders: true,
                ..Default::default()
            },
            ..Ctx::default()
        };
        let mut approx = before.clone();
        let done = FoldFanOut.run(&mut approx.graph, &mut ctx).unwrap();
        assert_eq!(count(&approx, "Conv"), 2);
        let fold = &done.folds[0];
        let measured = max_relative_error(&before, &approx, &[vec![1, 4, 7, 7]], 0);
        let error = fold
            .border_error
            .expect("an approximate fold carries its error");
        assert!(!fold.exact && error > EXACT, "border error {error:e}");
        // The same kind of figure as measuring the whole model, on other samples.
        assert!(
            error < 3.0 * measured && measured < 3.0 * error,
            "{error} vs {measured}"
        );
    }
}
