//! `commute_global_pool`: a pointwise convolution before a GlobalAveragePool moves after
//! it, where it runs on one position instead of H×W (`docs/ARCHITECTURE.md`, folding
//! rule 7, pools).
//!
//! Pattern: x → Conv 1×1 (stride 1, unpadded, any groups, bias or not) → y → GAP → g,
//! y read only by the GAP → x → GAP → Conv 1×1 (the same weights) → g.
//!
//! Algebra: the average over positions is linear and the conv maps each position alike:
//! mean_p(W·x_p + b) = W·mean_p(x_p) + b. So with `fold_conv_into_gemm` after it,
//! `Conv1×1 → GAP → Flatten → Gemm` becomes `GAP → Flatten → Gemm`, and with
//! `fold_conv_chains`, `Conv1×1 → GAP → Conv1×1` heads become `GAP → Conv1×1`.
//!
//! Exactness: exact (≤ 1e-4 relative: the same sums, reassociated). A stride would skip
//! positions and padding would add bias-only ones to the average: neither commutes.
//!
//! Profitability: the conv's MACs shrink by H·W, so it nearly always pays; it is judged
//! by the cost model like every fold (forced when y is a value the user linearised).
//!
//! Ordering: after `linearize` (which removes the activation between a head's conv and
//! its pool) and `fold_parallel_convs`; before `fold_conv_chains` and
//! `fold_conv_into_gemm`, which fold the moved conv into the head after the pool. A run
//! of pointwise convs before a pool moves one conv per sweep.

use crate::error::Result;
use crate::fold::conv::Conv2d;
use crate::fold::nodes::{as_conv, emit_conv};
use crate::ir::shape::Shapes;
use crate::ir::{Attributes, DataType, Graph, NodeId, OpKind, Patch, ValueId, Wire};
use crate::passes::matching::single_use_producer;
use crate::passes::segments::{
    ChainShapes, Region, Replaced, Segment, apply_fold, judge_fold, reads_linearised,
    run_chain_folds, single_fold,
};
use crate::passes::{Ctx, FoldRecord, Pass, PassOutcome};

pub(crate) struct CommuteGlobalPool;

const NAME: &str = "commute_global_pool";

/// x → pointwise conv → y → GAP → output.
struct PooledConv {
    input: ValueId,
    conv_output: ValueId,
    output: ValueId,
    conv: Conv2d,
    /// The conv, then the pool.
    nodes: [NodeId; 2],
    /// The pool's name, which the moved pool keeps (made unique).
    pool_name: String,
    dtype: DataType,
}

impl Region for PooledConv {
    fn input(&self) -> ValueId {
        self.input
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.nodes.to_vec()
    }
}

impl Pass for CommuteGlobalPool {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, graph: &mut Graph, ctx: &mut Ctx) -> Result<PassOutcome> {
        run_chain_folds(NAME, graph, ctx, find_pooled_convs, choose_fold, apply)
    }
}

fn find_pooled_convs(graph: &Graph, shapes: &Shapes) -> Result<Vec<PooledConv>> {
    Ok(graph
        .topological_order()?
        .into_iter()
        .filter_map(|pool| as_pooled_conv(graph, pool, shapes))
        .collect())
}

fn as_pooled_conv(graph: &Graph, pool: NodeId, shapes: &Shapes) -> Option<PooledConv> {
    let node = graph.node(pool);
    if node.kind != OpKind::GlobalAveragePool {
        return None;
    }
    let conv_output = node.input(0)?;
    let conv_node = single_use_producer(graph, conv_output)?;
    if graph.node(conv_node).kind != OpKind::Conv {
        return None;
    }
    let conv = as_conv(graph, conv_node, shapes).filter(Conv2d::is_pointwise)?;
    let input = graph.node(conv_node).input(0)?;
    Some(PooledConv {
        input,
        conv_output,
        output: node.output(0)?,
        conv: Conv2d {
            dilation: [1, 1],
            ..conv
        },
        nodes: [conv_node, pool],
        pool_name: node.name.clone(),
        dtype: shapes.get(input).dtype.unwrap_or(DataType::Float),
    })
}

/// Adds the pool reading `x`, then the conv; returns the conv's output.
fn emit(patch: &mut Patch, x: Wire, region: &PooledConv, name: &str) -> Result<Wire> {
    let pooled = patch.node(
        &region.pool_name,
        OpKind::GlobalAveragePool,
        Attributes::default(),
        &[Some(x)],
        1,
    )[0];
    emit_conv(patch, pooled, &region.conv, region.dtype, name)
}

fn choose_fold(
    graph: &Graph,
    region: &PooledConv,
    shapes: &ChainShapes,
    ctx: &Ctx,
    _: &mut PassOutcome,
) -> Result<Vec<Segment<()>>> {
    let forced = reads_linearised(graph, ctx, [region.conv_output]);
    let ends = (region.input, std::slice::from_ref(&region.output));
    let verdict = judge_fold(graph, ends, &shapes.analysed, forced, ctx, |p, x, n| {
        Ok(vec![emit(p, x, region, n)?])
    })?;
    Ok(single_fold((), verdict, forced, ctx))
}

fn apply(
    graph: &mut Graph,
    region: &PooledConv,
    segment: &Segment<()>,
    shapes: &ChainShapes,
) -> Result<FoldRecord> {
    let replaced = Replaced {
        input: region.input,
        outputs: std::slice::from_ref(&region.output),
        nodes: &region.nodes,
    };
    apply_fold(
        graph,
        NAME,
        replaced,
        segment,
        true,
        &shapes.analysed,
        |p, x, n| Ok(vec![emit(p, x, region, n)?]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Model;
    use crate::ir::builder::ModelBuilder;
    use crate::passes::segments::testing::{run_with, verdict};
    use crate::passes::test_models::{EXACT, conv_attrs, count, ints, model, weights};
    use crate::testing::max_relative_error;

    /// x[·, 4, 5, 6] → Conv (`w` [8, 4/group, k, k], bias, `pads`, `strides`) → c → GAP
    /// → Reshape [0, -1] → Gemm [3, 8] → y.
    fn conv_pool_head(kernel: usize, pads: &[i64], strides: &[i64], group: i64) -> Model {
        model(
            ModelBuilder::new(13)
                .input("x", &[-1, 4, 5, 6])
                .initializer("w", weights(&[8, 4 / group as usize, kernel, kernel], 1))
                .initializer("b", weights(&[8], 2))
                .initializer("wg", weights(&[3, 8], 3))
                .initializer("shape", ints(&[2], &[0, -1]))
                .node(
                    "Conv",
                    &["x", "w", "b"],
                    &["c"],
                    conv_attrs(pads, strides, group),
                )
                .node("GlobalAveragePool", &["c"], &["g"], Attributes::default())
                .node("Reshape", &["g", "shape"], &["f"], Attributes::default())
                .node(
                    "Gemm",
                    &["f", "wg"],
                    &["y"],
                    Attributes::default().with_int("transB", 1),
                )
                .output("y"),
        )
    }

    fn pool_comes_first(model: &Model) -> bool {
        let g = &model.graph;
        let conv = g.nodes().find(|(_, n)| n.op() == "Conv").unwrap().1;
        let read = g.producer(conv.input(0).unwrap());
        read.is_some_and(|p| g.node(p).op() == "GlobalAveragePool")
    }

    #[test]
    fn fires_on_a_pointwise_conv_with_bias_and_groups_and_stays_exact() {
        for group in [1, 2] {
            let before = conv_pool_head(1, &[0; 4], &[1, 1], group);
            let (after, done) = run_with(&CommuteGlobalPool, &before, verdict(2.0, 1.0), &[]);
            assert!(pool_comes_first(&after), "group {group}");
            let folds = &done.folds;
            assert_eq!(folds.len(), 1);
            assert!(folds[0].exact && folds[0].border_error.is_none());
            let error = max_relative_error(&before, &after, &[vec![3, 4, 5, 6]], 1);
            assert!(error <= EXACT, "relative error {error:e}");
        }
    }

    #[test]
    fn skips_a_fold_the_cost_model_says_is_slower_unless_linearised() {
        let before = conv_pool_head(1, &[0; 4], &[1, 1], 1);
        let (after, done) = run_with(&CommuteGlobalPool, &before, verdict(1.0, 1.2), &[]);
        assert!(!pool_comes_first(&after) && done.folds.is_empty());
        let (after, done) = run_with(&CommuteGlobalPool, &before, verdict(1.0, 1.2), &["c"]);
        assert!(pool_comes_first(&after) && done.folds[0].forced);
    }

    #[test]
    fn skips_convs_that_do_not_commute_with_the_pool() {
        // A 3×3 mixes positions; a stride skips some; padding adds bias-only ones.
        for (kernel, pads, strides) in [
            (3, [0; 4], [1, 1]),
            (1, [0; 4], [2, 2]),
            (1, [1; 4], [1, 1]),
        ] {
            let before = conv_pool_head(kernel, &pads, &strides, 1);
            let (after, _) = run_with(&CommuteGlobalPool, &before, verdict(2.0, 1.0), &[]);
            assert!(!pool_comes_first(&after), "{kernel} {pads:?} {strides:?}");
        }
    }

    #[test]
    fn a_run_of_pointwise_convs_moves_whole_over_the_sweeps() {
        let before = model(
            ModelBuilder::new(13)
                .input("x", &[-1, 4, 5, 5])
                .initializer("w1", weights(&[6, 4, 1, 1], 1))
                .initializer("w2", weights(&[3, 6, 1, 1], 2))
                .initializer("b2", weights(&[3], 3))
                .node(
                    "Conv",
                    &["x", "w1"],
                    &["h"],
                    conv_attrs(&[0; 4], &[1, 1], 1),
                )
                .node(
                    "Conv",
                    &["h", "w2", "b2"],
                    &["c"],
                    conv_attrs(&[0; 4], &[1, 1], 1),
                )
                .node("GlobalAveragePool", &["c"], &["y"], Attributes::default())
                .output("y"),
        );
        let (after, done) = run_with(&CommuteGlobalPool, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(done.folds.len(), 2);
        let first = after.graph.topological_order().unwrap()[0];
        assert_eq!(after.graph.node(first).op(), "GlobalAveragePool");
        assert_eq!(count(&after, "GlobalAveragePool"), 1);
        let error = max_relative_error(&before, &after, &[vec![2, 4, 5, 5]], 2);
        assert!(error <= EXACT, "relative error {error:e}");
    }

    #[test]
    fn a_region_still_folding_after_the_last_sweep_is_an_error_not_a_silent_stop() {
        // Seventeen pointwise convs before the pool: one moves per sweep, sixteen sweeps.
        let mut builder = ModelBuilder::new(13)
            .input("x", &[-1, 2, 3, 3])
            .initializer("w", weights(&[2, 2, 1, 1], 1));
        let mut current = "x".to_string();
        for k in 0..17 {
            let next = format!("h{k}");
            builder = builder.node(
                "Conv",
                &[&current, "w"],
                &[&next],
                conv_attrs(&[0; 4], &[1, 1], 1),
            );
            current = next;
        }
        let before = model(
            builder
                .node(
                    "GlobalAveragePool",
                    &[&current],
                    &["y"],
                    Attributes::default(),
                )
                .output("y"),
        );
        let mut ctx = Ctx {
            cost: verdict(2.0, 1.0).into(),
            ..Ctx::default()
        };
        let error = CommuteGlobalPool
            .run(&mut before.clone().graph, &mut ctx)
            .unwrap_err()
            .to_string();
        assert!(error.contains("still folding after 16 sweeps"), "{error}");
    }
}
