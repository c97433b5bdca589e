//! `fold_constants`: a standard node whose inputs are all constants is evaluated (by
//! tract, on that node alone) and replaced by initializers; a `Shape` of a value whose
//! declared dims are all static becomes a constant too.
//!
//! - **Pattern**: `op(c1, …, cn)` → the constant results; `Shape(x)` with static dims
//!   → `[d0, …]`. Shape chains (Shape → Gather → Unsqueeze → Concat …), Cast,
//!   ConstantOfShape, Transpose, Reshape, arithmetic on weights, all fold this way.
//! - **Algebra**: none: the runtime's own evaluation, done once ahead of time.
//! - **Exactness**: bit-exact with what tract computes at run time. Dims come from the
//!   declared model only, never from pinned dims, so the model still runs at every size it
//!   accepts.
//! - **Profitability**: always, except for results far larger than what they are made of:
//!   ConstantOfShape, Expand and Tile results of more than 2²⁰ elements that outgrow
//!   their inputs stay computed at run time (a huge initializer costs more to load than the
//!   op costs to run). Never folded: QuantizeLinear / DequantizeLinear (quantization
//!   boundaries keep their form for runtimes that fuse them), random generators, nodes
//!   with subgraphs, nodes producing a graph output (an Identity would have to carry the
//!   name), and nodes tract cannot evaluate.
//! - **Ordering**: after `constant_to_initializer` (constants must be initializers);
//!   before `resolve_reshape_shapes`, `fold_pad_into_conv` and the affine folds, which
//!   need the shapes, pads and biases it computes.

use crate::error::{Error, Result};
use crate::ir::shape::Shapes;
use crate::ir::{Graph, Node, NodeId, OpKind, Patch, Tensor};
use crate::passes::{Ctx, Rule, patch};
use crate::runtime::eval::evaluate_node;

pub(crate) struct FoldConstants;

/// Operators whose results are not a function of their inputs, or whose form matters
/// more than their value.
const NEVER_FOLDED: &[&str] = &[
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Bernoulli",
    "Multinomial",
];

/// Results of more elements than this (and than their inputs) stay computed at run time.
const MAX_GROWN_ELEMENTS: usize = 1 << 20;

impl Rule for FoldConstants {
    fn name(&self) -> &'static str {
        "fold_constants"
    }

    fn rewrite(
        &self,
        graph: &Graph,
        id: NodeId,
        shapes: &Shapes,
        _: &mut Ctx,
    ) -> Result<Option<Patch>> {
        let node = graph.node(id);
        if !is_foldable(graph, node) {
            return Ok(None);
        }
        let results = match static_shape(node, shapes)? {
            Some(shape) => vec![shape],
            None => match evaluate(graph, node)? {
                Some(results) => results,
                None => return Ok(None),
            },
        };
        let outputs: Vec<_> = node.outputs.iter().flatten().copied().collect();
        // A result in another element type than the model declares is not substituted.
        let types_agree = outputs.len() == results.len()
            && outputs
                .iter()
                .zip(&results)
                .all(|(&v, t)| shapes.get(v).dtype.is_none_or(|d| d == t.dtype()));
        if !types_agree {
            return Ok(None);
        }
        let mut patch = patch(self.name(), node.op(), node);
        for (output, tensor) in outputs.into_iter().zip(results) {
            let constant = patch.constant(&graph.value(output).name, tensor);
            patch.shunt(output, constant);
        }
        Ok(Some(patch))
    }
}

fn is_foldable(graph: &Graph, node: &Node) -> bool {
    let standard = matches!(node.kind.domain(), "" | "ai.onnx");
    let excluded = node.kind == OpKind::Constant || NEVER_FOLDED.contains(&node.op());
    let has_subgraph = node.attributes.subgraphs().next().is_some();
    let outputs_replaceable = node
        .outputs
        .iter()
        .flatten()
        .all(|&v| !graph.is_output(v) && !graph.is_captured(v));
    standard
        && !excluded
        && !has_subgraph
        && outputs_replaceable
        && node.inputs.iter().any(Option::is_some)
}

/// `Shape(x)` when the declared dims of x are all static.
fn static_shape(node: &Node, shapes: &Shapes) -> Result<Option<Tensor>> {
    if node.kind != OpKind::Shape {
        return Ok(None);
    }
    let Some(dims) = node.input(0).and_then(|x| shapes.get(x).static_dims()) else {
        return Ok(None);
    };
    let rank = dims.len() as i64;
    let clamp = |axis: i64| (if axis < 0 { axis + rank } else { axis }).clamp(0, rank) as usize;
    let start = clamp(node.int("start")?.unwrap_or(0));
    let end = clamp(node.int("end")?.unwrap_or(rank)).max(start);
    let selected: Vec<i64> = dims[start..end].iter().map(|&d| d as i64).collect();
    Ok(Some(Tensor::from_i64(vec![selected.len()], &selected)))
}

/// The node's results on its constant inputs; `None` when an input is not constant, the
/// result would be too large, or tract cannot evaluate the node.
fn evaluate(graph: &Graph, node: &Node) -> Result<Option<Vec<Tensor>>> {
    let inputs: Option<Vec<&Tensor>> = node
        .inputs
        .iter()
        .flatten()
        .map(|&v| graph.constant(v))
        .collect();
    let Some(inputs) = inputs else {
        return Ok(None);
    };
    let input_elements: usize = inputs.iter().map(|t| t.numel()).sum();
    if grown_elements(node, &inputs).is_some_and(|n| n > MAX_GROWN_ELEMENTS && n > input_elements) {
        return Ok(None);
    }
    match evaluate_node(node, &inputs, graph.opset()) {
        Ok(results) => Ok(Some(results)),
        Err(Error::Runtime(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The element count of the result of an operator that can grow its input; `None` for
/// the others.
fn grown_elements(node: &Node, inputs: &[&Tensor]) -> Option<usize> {
    let dims_of = |t: &Tensor| -> Option<Vec<usize>> {
        t.to_i64()?
            .into_iter()
            .map(|d| usize::try_from(d).ok())
            .collect()
    };
    let dims: Vec<usize> = match node.op() {
        "ConstantOfShape" => dims_of(inputs.first()?)?,
        "Expand" => broadcast(inputs.first()?.dims(), &dims_of(inputs.get(1)?)?),
        "Tile" => inputs
            .first()?
            .dims()
            .iter()
            .zip(dims_of(inputs.get(1)?)?)
            .map(|(&d, r)| d.saturating_mul(r))
            .collect(),
        _ => return None,
    };
    Some(dims.into_iter().fold(1usize, usize::saturating_mul))
}

/// Numpy-style broadcast of two dims lists (each 1 stretches to the other).
fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let at = |d: &[usize], i: usize| (i + d.len()).checked_sub(rank).map_or(1, |j| d[j]);
    (0..rank).map(|i| at(a, i).max(at(b, i))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model};
    use crate::passes::Pass;
    use crate::passes::test_models::{assert_exact, count, ints, model, rewritten, weights};

    /// x[batch, 3, 4, 5] → Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 1)), [-1])).
    fn shape_chain(batch: i64) -> Model {
        model(
            ModelBuilder::new(13)
                .input("x", &[batch, 3, 4, 5])
                .initializer("one", ints(&[], &[1]))
                .initializer("zero", ints(&[1], &[0]))
                .initializer("rest", ints(&[1], &[-1]))
                .node("Shape", &["x"], &["s"], Attributes::default())
                .node("Gather", &["s", "one"], &["c"], Attributes::default())
                .node("Unsqueeze", &["c", "zero"], &["c1"], Attributes::default())
                .node(
                    "Concat",
                    &["c1", "rest"],
                    &["target"],
                    Attributes::default().with_int("axis", 0),
                )
                .node("Reshape", &["x", "target"], &["y"], Attributes::default())
                .output("y"),
        )
    }

    #[test]
    fn fires_on_a_shape_chain_of_static_dims() {
        let after = assert_exact(&FoldConstants, &shape_chain(2), &[vec![2, 3, 4, 5]]);
        assert_eq!(after.graph.node_count(), 1);
        let reshape = after.graph.nodes().next().unwrap().1;
        assert_eq!(
            after
                .graph
                .constant(reshape.input(1).unwrap())
                .unwrap()
                .to_i64(),
            Some(vec![3, -1])
        );
    }

    #[test]
    fn fires_on_weight_arithmetic_in_the_weight_type() {
        let b = ModelBuilder::new(13)
            .input("x", &[2, 4])
            .initializer("w", weights(&[3, 4], 1))
            .initializer("k", weights(&[4, 3], 2))
            .node("Transpose", &["w"], &["wt"], Attributes::default())
            .node("Mul", &["wt", "k"], &["scaled"], Attributes::default())
            .node("MatMul", &["x", "scaled"], &["y"], Attributes::default());
        let after = assert_exact(&FoldConstants, &model(b.output("y")), &[vec![2, 4]]);
        assert_eq!(after.graph.node_count(), 1);
    }

    #[test]
    fn skips_on_shape_of_a_symbolic_batch_even_when_pinned_because_the_batch_varies() {
        let before = shape_chain(-1);
        let mut after = before.clone();
        let pinned = [("x".to_string(), vec![2, 3, 4, 5])].into_iter().collect();
        let stats = FoldConstants
            .run(&mut after.graph, &mut Ctx::new(pinned, None))
            .unwrap()
            .stats;
        assert_eq!((stats.patches, count(&after, "Shape")), (0, 1));
    }

    #[test]
    fn skips_on_dequantize_linear_because_quantization_boundaries_keep_their_form() {
        let q =
            Tensor::from_f64(crate::ir::DataType::Int8, vec![4], &[1.0, -2.0, 3.0, 4.0]).unwrap();
        let b = ModelBuilder::new(13)
            .input("x", &[4])
            .initializer("q", q)
            .initializer("scale", Tensor::from_f32(vec![], &[0.5]))
            .node(
                "DequantizeLinear",
                &["q", "scale"],
                &["w"],
                Attributes::default(),
            )
            .node("Mul", &["x", "w"], &["y"], Attributes::default());
        assert_eq!(
            rewritten(&FoldConstants, &model(b.output("y"))).1.patches,
            0
        );
    }

    #[test]
    fn skips_on_a_huge_constant_of_shape_because_the_initializer_would_outweigh_the_op() {
        let b = ModelBuilder::new(13)
            .input("x", &[1])
            .initializer("dims", ints(&[2], &[2048, 1024]))
            .node(
                "ConstantOfShape",
                &["dims"],
                &["zeros"],
                Attributes::default(),
            )
            .node("Add", &["x", "zeros"], &["y"], Attributes::default());
        assert_eq!(
            rewritten(&FoldConstants, &model(b.output("y"))).1.patches,
            0
        );
    }
}
