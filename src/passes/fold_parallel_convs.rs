//! `fold_parallel_convs`: two convolutions of the same input summed by an Add become one
//! convolution (`docs/ARCHITECTURE.md`, folding rule 8, parallel branches: the RepVGG
//! re-parameterisation) — where that is faster on the runtime.
//!
//! Pattern: `Add(A(x), B(x))`, A and B Convs with constant weights (or AveragePools, which
//! are convolutions) that read the same x and whose outputs only the Add reads; or
//! `Add(x, A(x))`, the identity branch being x itself.
//!
//! Algebra: convolution is linear in its weights, so A(x) + B(x) is the convolution whose
//! weights are A's and B's placed on a common tap grid and added, and whose bias is the
//! sum of theirs (`fold::conv::sum`); the identity is a 1×1 depthwise conv of weight 1,
//! which lands on the centre tap of a same-padded k×k. Branches that do not line up
//! (different strides, channels or output sizes) are skipped.
//!
//! Exactness: exact everywhere (≤ 1e-4 relative): both branches pad the same x with zeros,
//! and the folded conv pads it the same way, so the border agrees too.
//!
//! Profitability: one k×k usually costs less than a k×k plus a 1×1 plus an Add, but not
//! always (a depthwise branch summed with a dense one becomes dense), so each fold is
//! judged by the cost model like the chain folds: it folds when it pays `min_gain`, or
//! whatever the verdict when x or a branch output is a value the user linearised.
//!
//! Ordering: after the canonical passes (BatchNorm folded into the branch convs, pads
//! explicit) and `linearize`, and before `fold_conv_chains`, so the single conv a block
//! folds into can join the chain around it. A block reading the output of another block
//! waits for a later run of the pass (its input is replaced when the first one folds).

use std::collections::HashSet;

use crate::error::Result;
use crate::fold::conv::{self, Conv2d};
use crate::fold::nodes::{as_conv, emit_conv};
use crate::ir::shape::Shapes;
use crate::ir::{DataType, Graph, NodeId, OpKind, ValueId};
use crate::passes::segments::{
    ChainShapes, Region, Replaced, Segment, apply_fold, judge_fold, reads_linearised,
    run_chain_folds, single_fold,
};
use crate::passes::{Ctx, FoldRecord, Pass, PassOutcome};

pub(crate) struct FoldParallelConvs;

const NAME: &str = "fold_parallel_convs";

/// `Add(branch(x), branch(x))`: to the segment machinery, a chain of one element from x
/// to the Add's output.
struct ParallelBlock {
    input: ValueId,
    output: ValueId,
    /// The Add's inputs: branch outputs, or x for the identity branch.
    branch_outputs: [ValueId; 2],
    branches: [Conv2d; 2],
    /// The branch convs, then the Add.
    nodes: Vec<NodeId>,
    dtype: DataType,
}

impl Region for ParallelBlock {
    fn input(&self) -> ValueId {
        self.input
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.nodes.clone()
    }
}

/// A Conv reading `input`, whose output only the Add reads.
struct ConvBranch {
    node: NodeId,
    input: ValueId,
    conv: Conv2d,
}

impl Pass for FoldParallelConvs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, graph: &mut Graph, ctx: &mut Ctx) -> Result<PassOutcome> {
        run_chain_folds(NAME, graph, ctx, find_blocks, choose_fold, apply)
    }
}

fn find_blocks(graph: &Graph, shapes: &Shapes) -> Result<Vec<ParallelBlock>> {
    let mut blocks: Vec<ParallelBlock> = graph
        .topological_order()?
        .into_iter()
        .filter_map(|add| as_parallel_block(graph, add, shapes))
        .collect();
    let outputs: HashSet<ValueId> = blocks.iter().map(|b| b.output).collect();
    blocks.retain(|b| !outputs.contains(&b.input));
    Ok(blocks)
}

fn as_parallel_block(graph: &Graph, add: NodeId, shapes: &Shapes) -> Option<ParallelBlock> {
    let node = graph.node(add);
    if node.kind != OpKind::Add || node.inputs.len() != 2 {
        return None;
    }
    let (left, right) = (node.input(0)?, node.input(1)?);
    if left == right {
        return None;
    }
    let branch = |v| conv_branch(graph, add, v, shapes);
    let (input, branches, mut nodes) = match (branch(left), branch(right)) {
        (Some(a), Some(b)) if a.input == b.input => {
            (a.input, [a.conv, b.conv], vec![a.node, b.node])
        }
        (Some(a), None) if a.input == right => (right, identity_and(a.conv), vec![a.node]),
        (None, Some(b)) if b.input == left => (left, identity_and(b.conv), vec![b.node]),
        _ => return None,
    };
    nodes.push(add);
    Some(ParallelBlock {
        input,
        output: node.output(0)?,
        branch_outputs: [left, right],
        branches,
        nodes,
        dtype: shapes.get(input).dtype.unwrap_or(DataType::Float),
    })
}

/// The identity branch (on the conv's input channels; `conv::sum` checks they match its
/// output channels) and the conv branch.
fn identity_and(conv: Conv2d) -> [Conv2d; 2] {
    [Conv2d::identity(conv.in_channels), conv]
}

fn conv_branch(graph: &Graph, add: NodeId, value: ValueId, shapes: &Shapes) -> Option<ConvBranch> {
    if graph.is_output(value) || graph.users(value) != [add] {
        return None;
    }
    let node = graph.producer(value)?;
    Some(ConvBranch {
        node,
        input: graph.node(node).input(0)?,
        conv: as_conv(graph, node, shapes)?,
    })
}

/// The block's fold, when its branches line up and it pays (or is forced).
fn choose_fold(
    graph: &Graph,
    block: &ParallelBlock,
    shapes: &ChainShapes,
    ctx: &Ctx,
    _: &mut PassOutcome,
) -> Result<Vec<Segment<Conv2d>>> {
    let Some(fold) = conv::sum(&block.branches[0], &block.branches[1]) else {
        return Ok(Vec::new());
    };
    let forced = reads_linearised(
        graph,
        ctx,
        [
            block.input,
            block.branch_outputs[0],
            block.branch_outputs[1],
        ],
    );
    let ends = (block.input, std::slice::from_ref(&block.output));
    let verdict = judge_fold(graph, ends, &shapes.analysed, forced, ctx, |p, x, n| {
        Ok(vec![emit_conv(p, x, &fold, block.dtype, n)?])
    })?;
    Ok(single_fold(fold, verdict, forced, ctx))
}

fn apply(
    graph: &mut Graph,
    block: &ParallelBlock,
    segment: &Segment<Conv2d>,
    shapes: &ChainShapes,
) -> Result<FoldRecord> {
    let region = Replaced {
        input: block.input,
        outputs: std::slice::from_ref(&block.output),
        nodes: &block.nodes,
    };
    apply_fold(
        graph,
        NAME,
        region,
        segment,
        true,
        &shapes.analysed,
        |p, x, n| Ok(vec![emit_conv(p, x, &segment.fold, block.dtype, n)?]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model};
    use crate::passes::segments::testing::{run_with, verdict};
    use crate::passes::test_models::{EXACT, conv_attrs, count, model, weights};
    use crate::testing::max_relative_error;

    const C: usize = 4;

    /// `Add(conv3×3 pad 1 (x), conv1×1 (x))`, both with biases; `extra` adds more nodes.
    fn two_branches(extra: impl FnOnce(ModelBuilder) -> ModelBuilder) -> Model {
        let builder = ModelBuilder::new(13)
            .input("x", &[-1, C as i64, 9, 9])
            .initializer("w3", weights(&[C, C, 3, 3], 1))
            .initializer("b3", weights(&[C], 2))
            .initializer("w1", weights(&[C, C, 1, 1], 3))
            .initializer("b1", weights(&[C], 4))
            .node(
                "Conv",
                &["x", "w3", "b3"],
                &["a"],
                conv_attrs(&[1; 4], &[1, 1], 1),
            )
            .node(
                "Conv",
                &["x", "w1", "b1"],
                &["b"],
                conv_attrs(&[0; 4], &[1, 1], 1),
            )
            .node("Add", &["a", "b"], &["y"], Attributes::default())
            .output("y");
        model(extra(builder))
    }

    /// `Add(x, depthwise conv3×3 pad 1 (x))`.
    fn identity_branch() -> Model {
        model(
            ModelBuilder::new(13)
                .input("x", &[-1, C as i64, 9, 9])
                .initializer("w", weights(&[C, 1, 3, 3], 5))
                .initializer("b", weights(&[C], 6))
                .node(
                    "Conv",
                    &["x", "w", "b"],
                    &["a"],
                    conv_attrs(&[1; 4], &[1, 1], C as i64),
                )
                .node("Add", &["x", "a"], &["y"], Attributes::default())
                .output("y"),
        )
    }

    fn assert_folded_into_one_conv(before: &Model, folded_nodes: usize) {
        let (after, done) = run_with(&FoldParallelConvs, before, verdict(2.0, 1.0), &[]);
        assert_eq!((count(&after, "Conv"), count(&after, "Add")), (1, 0));
        let folds = &done.folds;
        assert_eq!(folds.len(), 1);
        assert_eq!(folds[0].sources.len(), folded_nodes);
        assert!(folds[0].exact && !folds[0].forced);
        let error = max_relative_error(before, &after, &[vec![2, C, 9, 9]], 3);
        assert!(error <= EXACT, "relative error {error:e}");
    }

    #[test]
    fn fires_on_a_3x3_and_a_1x1_branch() {
        assert_folded_into_one_conv(&two_branches(|b| b), 3);
    }

    #[test]
    fn fires_on_an_identity_and_a_same_padded_3x3_branch() {
        assert_folded_into_one_conv(&identity_branch(), 2);
    }

    #[test]
    fn skips_a_fold_the_cost_model_says_is_slower() {
        let before = two_branches(|b| b);
        let (after, done) = run_with(&FoldParallelConvs, &before, verdict(1.0, 1.2), &[]);
        assert_eq!(count(&after, "Conv"), 2);
        assert!(done.folds.is_empty());
    }

    #[test]
    fn folds_a_linearised_branch_even_when_slower() {
        let before = identity_branch();
        let (after, done) = run_with(&FoldParallelConvs, &before, verdict(1.0, 1.2), &["a"]);
        assert_eq!(count(&after, "Conv"), 1);
        assert!(done.folds[0].forced);
    }

    #[test]
    fn skips_branches_with_different_strides() {
        // 5×5 stride 1 and 1×1 stride 2 both take 9×9 to 5×5.
        let before = model(
            ModelBuilder::new(13)
                .input("x", &[1, C as i64, 9, 9])
                .initializer("w5", weights(&[C, C, 5, 5], 1))
                .initializer("w1", weights(&[C, C, 1, 1], 2))
                .node(
                    "Conv",
                    &["x", "w5"],
                    &["a"],
                    conv_attrs(&[0; 4], &[1, 1], 1),
                )
                .node(
                    "Conv",
                    &["x", "w1"],
                    &["b"],
                    conv_attrs(&[0; 4], &[2, 2], 1),
                )
                .node("Add", &["a", "b"], &["y"], Attributes::default())
                .output("y"),
        );
        let (after, done) = run_with(&FoldParallelConvs, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Conv"), 2);
        assert!(done.folds.is_empty());
    }

    #[test]
    fn skips_a_branch_whose_output_is_read_elsewhere() {
        let before = two_branches(|b| {
            b.node("Relu", &["b"], &["z"], Attributes::default())
                .output("z")
        });
        let (after, _) = run_with(&FoldParallelConvs, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Conv"), 2);
    }
}
