//! `fold_gemm_chains`: a chain of dense layers with nothing non-linear between them
//! becomes fewer dense layers — where that is faster on the runtime (`docs/ARCHITECTURE.md`,
//! folding rule 4, dense chains).
//!
//! Pattern: x → L1 → L2 → … → Lm on 2-D activations, each Lk a Gemm (`transA = 0`,
//! constant B, bias C absent or one constant row) or a MatMul by a constant 2-D B, or a
//! Flatten (axis 1) or Reshape to [0, -1] / [N, -1] of a 2-D value, which changes
//! nothing. Any contiguous segment with at least two layers whose inner values are read
//! only by the next element (and are no graph outputs) folds into one Gemm
//! (`transB = 1`, α = β = 1).
//!
//! Algebra: `fold::gemm` (W = W2·W1, b = W2·b1 + b2).
//!
//! Exactness: exact — the same sums of products, reassociated (≤ 1e-4 relative in f32).
//!
//! Profitability: a fold through a narrow layer costs more (64 → 8 → 64 is 1024 MACs a
//! row as two layers, 4096 as one), so the partition of each chain is chosen by dynamic
//! programming over the cost model's measured gains (`segments`): a segment folds when it
//! pays `min_gain`, and segments spanning a value the user linearised must fold whatever
//! the verdict.
//!
//! Ordering: after the canonical passes (`matmul_add_to_gemm` has made MatMul + Add one
//! Gemm, `fold_affine` has folded per-column scales) and after `linearize`.

use std::collections::HashSet;

use crate::error::Result;
use crate::fold::gemm::Dense;
use crate::ir::shape::Shapes;
use crate::ir::{Attributes, DataType, Graph, NodeId, OpKind, Patch, Tensor, ValueId, Wire};
use crate::passes::segments::{
    self, ChainElement, ChainShapes, Replaced, Segment, apply_fold, best_partition, judge_fold,
    run_chain_folds,
};
use crate::passes::{Ctx, FoldRecord, Pass, PassOutcome};

pub(crate) struct FoldGemmChains;

const NAME: &str = "fold_gemm_chains";

enum Element {
    /// A Gemm or MatMul by a constant matrix of element type `dtype`.
    Layer {
        node: NodeId,
        map: Dense,
        dtype: DataType,
    },
    /// A Flatten or Reshape that leaves its 2-D input as it is.
    Identity { node: NodeId },
}

impl ChainElement for Element {
    fn node(&self) -> NodeId {
        match self {
            Element::Layer { node, .. } | Element::Identity { node } => *node,
        }
    }
}

type Chain = segments::Chain<Element>;

/// A segment's fold: the composed map, stored in the element type of its first weight.
#[derive(Clone)]
struct Fold {
    map: Dense,
    dtype: DataType,
}

impl Pass for FoldGemmChains {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(&self, graph: &mut Graph, ctx: &mut Ctx) -> Result<PassOutcome> {
        run_chain_folds(NAME, graph, ctx, find_chains, choose_folds, apply)
    }
}

/// `node` as a chain element reading `x`, a 2-D value of `rows` rows (when known).
/// (Shape inference may not know the rank past a Flatten of a dynamic batch; the chain
/// does: every element maps 2-D to 2-D, keeping the rows.)
fn as_element(graph: &Graph, node: NodeId, x: ValueId, rows: Option<usize>) -> Option<Element> {
    if flattens_rows(graph, node, x, rows) {
        return Some(Element::Identity { node });
    }
    let (map, dtype) = dense_layer(graph, node, x)?;
    Some(Element::Layer { node, map, dtype })
}

/// A Gemm (`transA = 0`, constant B, bias absent or one constant row) or a MatMul by a
/// constant 2-D B, reading `x`: its map, and the element type of its weight.
pub(super) fn dense_layer(graph: &Graph, node: NodeId, x: ValueId) -> Option<(Dense, DataType)> {
    let n = graph.node(node);
    if n.input(0) != Some(x) {
        return None;
    }
    let int = |name: &str, default: i64| n.int(name).ok().flatten().unwrap_or(default);
    let float = |name: &str| n.float(name).ok().flatten().map_or(1.0, f64::from);
    let weight = graph.constant(n.input(1)?)?;
    let map = match n.kind {
        OpKind::Gemm if int("transA", 0) == 0 => {
            let bias = match n.input(2) {
                Some(c) => Some(graph.constant(c)?),
                None => None,
            };
            let trans_b = int("transB", 0) != 0;
            Dense::from_gemm(weight, bias, trans_b, float("alpha"), float("beta"))
        }
        OpKind::MatMul => Dense::from_matmul(weight),
        _ => None,
    }?;
    Some((map, weight.dtype()))
}

/// `node` reads `x` (of `rows` rows, when known) and flattens each row: a Flatten (axis
/// 1), or a Reshape to [0, -1] or [rows, -1]. On a 2-D value it changes nothing.
pub(super) fn flattens_rows(graph: &Graph, node: NodeId, x: ValueId, rows: Option<usize>) -> bool {
    let n = graph.node(node);
    let int = |name: &str, default: i64| n.int(name).ok().flatten().unwrap_or(default);
    if n.input(0) != Some(x) {
        return false;
    }
    match n.kind {
        OpKind::Flatten => int("axis", 1) == 1,
        OpKind::Reshape => {
            let target = n
                .input(1)
                .and_then(|t| graph.constant(t))
                .and_then(Tensor::to_i64);
            match target.as_deref() {
                Some([0, -1]) => int("allowzero", 0) == 0,
                Some(&[target, -1]) => rows.is_some_and(|r| usize::try_from(target) == Ok(r)),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Maximal chains, each starting at an element no chain has claimed yet and continuing
/// while the last value has a single reader that continues it.
fn find_chains(graph: &Graph, shapes: &Shapes) -> Result<Vec<Chain>> {
    let mut claimed = HashSet::new();
    let mut chains = Vec::new();
    for id in graph.topological_order()? {
        let node = graph.node(id);
        let (Some(x), Some(y)) = (node.input(0), node.output(0)) else {
            continue;
        };
        // A Gemm reads 2-D by definition, even where inference lost the rank.
        let is_2d = shapes.get(x).rank() == Some(2) || node.kind == OpKind::Gemm;
        if claimed.contains(&id) || !is_2d {
            continue;
        }
        let rows = shapes.get(x).dim(0);
        let Some(first) = as_element(graph, id, x, rows) else {
            continue;
        };
        let chain = Chain::grow(graph, x, y, first, |chain| next_element(graph, chain, rows));
        claimed.extend(chain.elements.iter().map(Element::node));
        if chain.elements.len() >= 2 {
            chains.push(chain);
        }
    }
    Ok(chains)
}

/// The reader of the chain's last value, when it alone reads that value and is an element.
fn next_element(graph: &Graph, chain: &Chain, rows: Option<usize>) -> Option<Element> {
    let last = *chain.values.last()?;
    let reader = graph.has_single_use(last).then(|| graph.users(last)[0])?;
    as_element(graph, reader, last, rows)
}

/// The best partition of the chain into folded segments.
fn choose_folds(
    graph: &Graph,
    chain: &Chain,
    shapes: &ChainShapes,
    ctx: &Ctx,
    _: &mut PassOutcome,
) -> Result<Vec<Segment<Fold>>> {
    best_partition(
        graph,
        &chain.values,
        ctx,
        |a| segment_folds(chain, a),
        |a, b, fold, forced| {
            let ends = (chain.values[a], &chain.values[b..=b]);
            judge_fold(graph, ends, &shapes.analysed, forced, ctx, |p, x, n| {
                Ok(vec![emit_gemm(p, x, &fold.map, fold.dtype, n)?])
            })
        },
    )
}

/// The fold of every segment starting at p_a, by end point: `None` until it spans two
/// layers, and from where the widths disagree.
fn segment_folds(chain: &Chain, a: usize) -> Vec<Option<Fold>> {
    let mut folds: Vec<Option<Fold>> = vec![None; chain.elements.len() + 1];
    let mut composed: Option<Fold> = None;
    let mut layers = 0;
    for (k, element) in chain.elements.iter().enumerate().skip(a) {
        if let Element::Layer { map, dtype, .. } = element {
            let next = match &composed {
                None => Some(Fold {
                    map: map.clone(),
                    dtype: *dtype,
                }),
                Some(fold) => fold.map.then(map).map(|map| Fold {
                    map,
                    dtype: fold.dtype,
                }),
            };
            let Some(next) = next else { break };
            composed = Some(next);
            layers += 1;
        }
        if layers >= 2 {
            folds[k + 1] = composed.clone();
        }
    }
    folds
}

fn apply(
    graph: &mut Graph,
    chain: &Chain,
    segment: &Segment<Fold>,
    shapes: &ChainShapes,
) -> Result<FoldRecord> {
    let nodes: Vec<NodeId> = chain.elements[segment.a..segment.b]
        .iter()
        .map(Element::node)
        .collect();
    let region = Replaced {
        input: chain.values[segment.a],
        outputs: &chain.values[segment.b..=segment.b],
        nodes: &nodes,
    };
    let Fold { map, dtype } = &segment.fold;
    apply_fold(
        graph,
        NAME,
        region,
        segment,
        true,
        &shapes.analysed,
        |p, x, n| Ok(vec![emit_gemm(p, x, map, *dtype, n)?]),
    )
}

/// Adds `map` as a Gemm (`transB = 1`) reading `x`; returns its output.
pub(super) fn emit_gemm(
    patch: &mut Patch,
    x: Wire,
    map: &Dense,
    dtype: DataType,
    name: &str,
) -> Result<Wire> {
    let (weight, bias) = map.gemm_operands(dtype)?;
    let weight = patch.constant(&format!("{name}.weight"), weight);
    let mut inputs = vec![Some(x), Some(weight)];
    if let Some(bias) = bias {
        inputs.push(Some(patch.constant(&format!("{name}.bias"), bias)));
    }
    let attributes = Attributes::default().with_int("transB", 1);
    Ok(patch.node(name, OpKind::Gemm, attributes, &inputs, 1)[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Model;
    use crate::ir::builder::ModelBuilder;
    use crate::passes::segments::testing::{run_with, verdict};
    use crate::passes::test_models::{EXACT, count, ints, model, weights};
    use crate::testing::max_relative_error;

    fn gemm_attrs(trans_a: i64, trans_b: i64, alpha: f32, beta: f32) -> Attributes {
        Attributes::default()
            .with_int("transA", trans_a)
            .with_int("transB", trans_b)
            .with_float("alpha", alpha)
            .with_float("beta", beta)
    }

    /// x[·, 6] → Gemm (transB, α, β, [1, 8] bias) → h1 → Flatten → Reshape [0, -1] →
    /// MatMul [8, 5] → h2 → Gemm ([4] bias) → y[·, 4].
    fn dense_chain() -> Model {
        model(
            ModelBuilder::new(13)
                .input("x", &[-1, 6])
                .initializer("w1", weights(&[8, 6], 1))
                .initializer("b1", weights(&[1, 8], 2))
                .initializer("rows", ints(&[2], &[0, -1]))
                .initializer("w2", weights(&[8, 5], 3))
                .initializer("w3", weights(&[5, 4], 4))
                .initializer("b3", weights(&[4], 5))
                .node(
                    "Gemm",
                    &["x", "w1", "b1"],
                    &["h1"],
                    gemm_attrs(0, 1, 0.5, 2.0),
                )
                .node(
                    "Flatten",
                    &["h1"],
                    &["f"],
                    Attributes::default().with_int("axis", 1),
                )
                .node("Reshape", &["f", "rows"], &["r"], Attributes::default())
                .node("MatMul", &["r", "w2"], &["h2"], Attributes::default())
                .node(
                    "Gemm",
                    &["h2", "w3", "b3"],
                    &["y"],
                    gemm_attrs(0, 0, 1.0, 1.0),
                )
                .output("y"),
        )
    }

    /// x → Gemm (attributes `first`, bias of `first_bias` dims) → h → Gemm → y; h also
    /// read by a Relu when `read_twice`.
    fn two_gemms(x: &[i64], first: Attributes, first_bias: &[usize], read_twice: bool) -> Model {
        let mut builder = ModelBuilder::new(13)
            .input("x", x)
            .initializer("w1", weights(&[6, 5], 1))
            .initializer("b1", weights(first_bias, 2))
            .initializer("w2", weights(&[5, 4], 3))
            .node("Gemm", &["x", "w1", "b1"], &["h"], first)
            .node("Gemm", &["h", "w2"], &["y"], Attributes::default())
            .output("y");
        if read_twice {
            builder = builder
                .node("Relu", &["h"], &["z"], Attributes::default())
                .output("z");
        }
        model(builder)
    }

    fn layers(model: &Model) -> usize {
        ["Gemm", "MatMul", "Flatten", "Reshape"]
            .iter()
            .map(|op| count(model, op))
            .sum()
    }

    #[test]
    fn fires_on_a_whole_chain_when_the_cost_model_says_it_is_faster() {
        let before = dense_chain();
        let (after, done) = run_with(&FoldGemmChains, &before, verdict(2.0, 1.0), &[]);
        assert_eq!((layers(&after), count(&after, "Gemm")), (1, 1));
        let folds = &done.folds;
        assert_eq!(folds.len(), 1);
        assert_eq!(folds[0].sources.len(), 5);
        assert!(folds[0].exact && !folds[0].forced);
        let error = max_relative_error(&before, &after, &[vec![3, 6]], 1);
        assert!(error <= EXACT, "relative error {error:e}");
    }

    #[test]
    fn skips_a_fold_the_cost_model_says_is_slower() {
        let (after, done) = run_with(&FoldGemmChains, &dense_chain(), verdict(1.0, 1.2), &[]);
        assert_eq!(layers(&after), 5);
        assert!(done.folds.is_empty());
    }

    #[test]
    fn folds_across_linearised_values_even_when_slower() {
        let before = dense_chain();
        let (after, done) = run_with(&FoldGemmChains, &before, verdict(1.0, 1.2), &["h2"]);
        assert_eq!(count(&after, "MatMul"), 0, "the layers around h2 fold");
        let folds = &done.folds;
        assert!(!folds.is_empty() && folds.iter().all(|f| f.forced));
        let error = max_relative_error(&before, &after, &[vec![2, 6]], 2);
        assert!(error <= EXACT, "relative error {error:e}");
    }

    #[test]
    fn skips_on_trans_a_which_contracts_over_the_batch() {
        let before = two_gemms(&[6, 3], gemm_attrs(1, 0, 1.0, 1.0), &[5], false);
        let (after, _) = run_with(&FoldGemmChains, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Gemm"), 2);
    }

    #[test]
    fn skips_on_a_bias_that_varies_per_row() {
        let before = two_gemms(&[2, 6], Attributes::default(), &[2, 5], false);
        let (after, _) = run_with(&FoldGemmChains, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Gemm"), 2);
    }

    #[test]
    fn skips_on_an_inner_value_read_twice() {
        let before = two_gemms(&[-1, 6], Attributes::default(), &[5], true);
        let (after, _) = run_with(&FoldGemmChains, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Gemm"), 2);
    }

    #[test]
    fn folds_matmul_then_gemm_of_any_widths_exactly() {
        for (seed, [inputs, hidden, outputs]) in
            [[3, 7, 2], [9, 4, 6], [1, 5, 1]].into_iter().enumerate()
        {
            let seed = seed as u64;
            let before = model(
                ModelBuilder::new(13)
                    .input("x", &[-1, inputs as i64])
                    .initializer("w1", weights(&[inputs, hidden], seed))
                    .initializer("w2", weights(&[outputs, hidden], seed + 10))
                    .initializer("b2", weights(&[1, outputs], seed + 20))
                    .node("MatMul", &["x", "w1"], &["h"], Attributes::default())
                    .node(
                        "Gemm",
                        &["h", "w2", "b2"],
                        &["y"],
                        gemm_attrs(0, 1, 1.5, 0.5),
                    )
                    .output("y"),
            );
            let (after, _) = run_with(&FoldGemmChains, &before, verdict(2.0, 1.0), &[]);
            assert_eq!(layers(&after), 1, "widths {inputs}, {hidden}, {outputs}");
            let error = max_relative_error(&before, &after, &[vec![5, inputs]], seed);
            assert!(error <= EXACT, "relative error {error:e}");
        }
    }

    #[test]
    fn folds_two_gemms_numerically_exactly() {
        let before = two_gemms(&[-1, 6], Attributes::default(), &[5], false);
        let (after, _) = run_with(&FoldGemmChains, &before, verdict(2.0, 1.0), &[]);
        assert_eq!(count(&after, "Gemm"), 1);
        let error = max_relative_error(&before, &after, &[vec![4, 6]], 3);
        assert!(error <= EXACT, "relative error {error:e}");
    }
}
