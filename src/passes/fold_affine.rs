//! `fold_affine`: a per-channel constant Mul, Add, Sub or Div folds into the linear layer
//! before it, or into the one after it. `fold_batchnorm` uses the same fold.
//!
//! - **Pattern** (`op` ∈ Mul(x, c), Add(x, c), Sub(x, c), Sub(c, x), Div(x, c), either
//!   operand order where it commutes; `c` a float constant that varies along the layer's
//!   channel axis at most):
//!   - `Conv | ConvTranspose | Gemm → op` → the layer with new weight and bias, when op
//!     alone reads the layer;
//!   - `MatMul(x, B) → op` → `MatMul(x, B')`, plus `Add(·, t)` when there is a shift —
//!     only when op scales (a pure shift would just move);
//!   - `op → Conv | Gemm(transA = 0)` → the layer reading x, when the layer alone reads
//!     op, at its data input.
//! - **Algebra**: `fold::affine` (s·(W∗x + b) + t and W∗(s·x + t) + b as one layer).
//! - **Exactness**: into the layer before: exact. Into the layer after: exact when the
//!   layer is unpadded; with padding only a pure scale folds (s·0 = 0), since a shift
//!   pushed through zero padding is wrong at the border. Div(x, c) becomes x·(1/c), one
//!   rounding away from the division. Outputs stay within 1e-4 relative (f32); fp16
//!   weights are rounded to fp16 once.
//! - **Profitability**: always: one elementwise node fewer and the layer costs the same
//!   (a bias input may appear). On a MatMul a scale+shift becomes a single Add.
//! - **Ordering**: after `fold_constants` (bias reshapes become constants),
//!   `resolve_auto_pad` (padding is explicit), `matmul_add_to_gemm` (the MatMul+Add is a
//!   Gemm by then, which absorbs what follows it) and `fold_batchnorm`.

use crate::error::Result;
use crate::fold::affine::{ChannelAffine, Folded, Layer, absorb_following, absorb_preceding};
use crate::ir::shape::Shapes;
use crate::ir::window::Window;
use crate::ir::{Attributes, Graph, Node, NodeId, OpKind, Patch, Tensor, ValueId, Wire};
use crate::passes::matching::{constant_input, is_row_bias, is_unpadded, sole_reader};
use crate::passes::{Ctx, Rule, patch};

pub(crate) struct FoldAffine;

impl Rule for FoldAffine {
    fn name(&self) -> &'static str {
        "fold_affine"
    }

    fn rewrite(
        &self,
        graph: &Graph,
        id: NodeId,
        shapes: &Shapes,
        _: &mut Ctx,
    ) -> Result<Option<Patch>> {
        match elementwise_affine(graph, graph.node(id), shapes) {
            Some(affine) => fold_into_layer(self.name(), graph, id, &affine, shapes),
            None => Ok(None),
        }
    }
}

/// A node computing y = scale·x + shift, constant along every axis of x but `axis`.
pub(super) struct AffineNode {
    pub data: ValueId,
    pub output: ValueId,
    /// The one axis of `data` it varies along; `None` when it is the same everywhere.
    pub axis: Option<usize>,
    /// One value, or one per channel along `axis`.
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
}

impl AffineNode {
    /// The map on `channels` channels along `axis`, if that is the only axis it varies along.
    fn along(&self, axis: usize, channels: usize) -> Option<ChannelAffine> {
        if self.axis.is_some_and(|a| a != axis) {
            return None;
        }
        let per_channel = |values: &[f64]| match values.len() {
            1 => Some(vec![values[0]; channels]),
            n if n == channels => Some(values.to_vec()),
            _ => None,
        };
        Some(ChannelAffine {
            scale: per_channel(&self.scale)?,
            shift: per_channel(&self.shift)?,
        })
    }
}

fn elementwise_affine(graph: &Graph, node: &Node, shapes: &Shapes) -> Option<AffineNode> {
    let (a, b) = (node.input(0)?, node.input(1)?);
    let (data, constant, constant_first) = match (graph.constant(a), graph.constant(b)) {
        (None, Some(c)) => (a, c, false),
        (Some(c), None) => (b, c, true),
        _ => return None,
    };
    if !constant.dtype().is_float() {
        return None;
    }
    let (axis, c) = varying_axis(constant, shapes.get(data).rank()?)?;
    let (scale, shift) = match (&node.kind, constant_first) {
        (OpKind::Mul, _) => (c, vec![0.0]),
        (OpKind::Add, _) => (vec![1.0], c),
        (OpKind::Sub, false) => (vec![1.0], c.iter().map(|v| -v).collect()),
        (OpKind::Sub, true) => (vec![-1.0], c),
        (OpKind::Div, false) if c.iter().all(|&v| v != 0.0) => {
            (c.iter().map(|v| 1.0 / v).collect(), vec![0.0])
        }
        _ => return None,
    };
    Some(AffineNode {
        data,
        output: node.output(0)?,
        axis,
        scale,
        shift,
    })
}

/// The one axis of a rank-`rank` value along which a broadcast constant varies (`None`
/// when it varies along none), and its values.
fn varying_axis(constant: &Tensor, rank: usize) -> Option<(Option<usize>, Vec<f64>)> {
    let dims = constant.dims();
    let offset = rank.checked_sub(dims.len())?;
    let mut varying = dims
        .iter()
        .enumerate()
        .filter(|&(_, &d)| d != 1)
        .map(|(i, _)| offset + i);
    let axis = match (varying.next(), varying.next()) {
        (axis, None) => axis,
        _ => return None,
    };
    Some((axis, constant.to_f64()?))
}

/// Folds the affine node `id` into the layer before it, or else into the layer after it.
pub(super) fn fold_into_layer(
    pass: &str,
    graph: &Graph,
    id: NodeId,
    affine: &AffineNode,
    shapes: &Shapes,
) -> Result<Option<Patch>> {
    if let Some(patch) = fold_into_preceding(pass, graph, id, affine, shapes)? {
        return Ok(Some(patch));
    }
    fold_into_following(pass, graph, id, affine, shapes)
}

fn fold_into_preceding(
    pass: &str,
    graph: &Graph,
    id: NodeId,
    affine: &AffineNode,
    shapes: &Shapes,
) -> Result<Option<Patch>> {
    let Some(producer) = graph
        .producer(affine.data)
        .filter(|_| graph.has_single_use(affine.data))
    else {
        return Ok(None);
    };
    let Some(layer) = LinearLayer::of(graph, producer, shapes)? else {
        return Ok(None);
    };
    let Some(map) = affine.along(layer.output_axis, layer.outputs) else {
        return Ok(None);
    };
    if layer.kind == Layer::MatMul && !map.has_scale() {
        return Ok(None);
    }
    let Some(folded) = absorb_following(layer.kind, layer.weight, layer.bias, &map) else {
        return Ok(None);
    };
    let mut patch = patch(pass, "into_preceding_layer", graph.node(id));
    let output = layer.rewrite(graph, &mut patch, layer.data, folded);
    patch.shunt(affine.output, output);
    Ok(Some(patch))
}

fn fold_into_following(
    pass: &str,
    graph: &Graph,
    id: NodeId,
    affine: &AffineNode,
    shapes: &Shapes,
) -> Result<Option<Patch>> {
    let Some(consumer) = sole_reader(graph, affine.output) else {
        return Ok(None);
    };
    let node = graph.node(consumer);
    let reads_data = node.input(0) == Some(affine.output);
    let transposes_a = node.kind == OpKind::Gemm && node.int("transA")?.unwrap_or(0) != 0;
    if !reads_data || transposes_a || !matches!(node.kind, OpKind::Conv | OpKind::Gemm) {
        return Ok(None);
    }
    let Some(layer) = LinearLayer::of(graph, consumer, shapes)? else {
        return Ok(None);
    };
    let Some(map) = affine.along(1, layer.inputs) else {
        return Ok(None);
    };
    if map.has_shift() && !is_unpadded(graph, node)? {
        return Ok(None);
    }
    let Some(folded) = absorb_preceding(layer.kind, layer.weight, layer.bias, &map) else {
        return Ok(None);
    };
    let mut patch = patch(pass, "into_following_layer", graph.node(id));
    layer.rewrite(graph, &mut patch, affine.data, folded);
    Ok(Some(patch))
}

/// A Conv, ConvTranspose, Gemm or MatMul with constant weight (and bias).
struct LinearLayer<'g> {
    id: NodeId,
    kind: Layer,
    data: ValueId,
    weight: &'g Tensor,
    weight_value: ValueId,
    bias: Option<&'g Tensor>,
    bias_value: Option<ValueId>,
    output: ValueId,
    /// The channel axis of its output.
    output_axis: usize,
    outputs: usize,
    inputs: usize,
}

impl<'g> LinearLayer<'g> {
    fn of(graph: &'g Graph, id: NodeId, shapes: &Shapes) -> Result<Option<LinearLayer<'g>>> {
        let node = graph.node(id);
        let (Some(data), Some(weight_value), Some(output)) =
            (node.input(0), node.input(1), node.output(0))
        else {
            return Ok(None);
        };
        let (Some(weight), Some(bias)) = (
            graph.constant(weight_value),
            optional_constant(graph, node, 2),
        ) else {
            return Ok(None);
        };
        let Some((kind, output_axis)) = layer_kind(graph, node, shapes.get(output).rank())? else {
            return Ok(None);
        };
        let Some((outputs, inputs)) = kind.channels(weight.dims()) else {
            return Ok(None);
        };
        if matches!(kind, Layer::Gemm { .. }) && bias.is_some_and(|c| !is_row_bias(c)) {
            return Ok(None);
        }
        Ok(Some(LinearLayer {
            id,
            kind,
            data,
            weight,
            weight_value,
            bias,
            bias_value: node.input(2),
            output,
            output_axis,
            outputs,
            inputs,
        }))
    }

    /// Adds to `patch` the layer reading `data` with the folded parameters; returns the
    /// wire that carries its result (for a MatMul, the Add of its new bias).
    fn rewrite(&self, graph: &Graph, patch: &mut Patch, data: ValueId, folded: Folded) -> Wire {
        let node = graph.node(self.id);
        let weight = replacement(graph, patch, self.weight_value, folded.weight);
        let bias = folded.bias.map(|b| match self.bias_value {
            Some(old) => replacement(graph, patch, old, b),
            None => patch.constant(&format!("{}_bias", graph.value(self.weight_value).name), b),
        });
        let data = Some(Wire::from(data));
        if self.kind == Layer::MatMul {
            patch.redefine(
                self.id,
                node.kind.clone(),
                node.attributes.clone(),
                &[data, Some(weight)],
            );
            return match bias {
                Some(bias) => {
                    let inputs = [Some(self.output.into()), Some(bias)];
                    patch.node(
                        &format!("{}_bias", node.name),
                        OpKind::Add,
                        Attributes::default(),
                        &inputs,
                        1,
                    )[0]
                }
                None => self.output.into(),
            };
        }
        let mut attributes = node.attributes.clone();
        if matches!(self.kind, Layer::Gemm { .. }) && bias.is_some() {
            attributes = attributes.with_float("beta", 1.0);
        }
        // An absent bias is left out rather than written as an empty trailing input.
        let inputs: Vec<Option<Wire>> = [data, Some(weight)]
            .into_iter()
            .chain(bias.map(Some))
            .collect();
        patch.redefine(self.id, node.kind.clone(), attributes, &inputs);
        self.output.into()
    }
}

/// A new constant standing for the constant `old`; it takes over the name of `old` when
/// nothing else reads that and the dims agree (a broadcast Gemm bias becomes [N]).
fn replacement(graph: &Graph, patch: &mut Patch, old: ValueId, tensor: Tensor) -> Wire {
    let same_dims = graph
        .constant(old)
        .is_some_and(|t| t.dims() == tensor.dims());
    let new = patch.constant(&graph.value(old).name, tensor);
    if same_dims && graph.has_single_use(old) {
        patch.shunt(old, new);
    }
    new
}

/// `Some(None)` when input `slot` is absent, `Some(tensor)` when constant, `None` otherwise.
fn optional_constant<'g>(graph: &'g Graph, node: &Node, slot: usize) -> Option<Option<&'g Tensor>> {
    match node.input(slot) {
        None => Some(None),
        Some(_) => constant_input(graph, node, slot).map(Some),
    }
}

/// The layer kind and its output channel axis (the last one for a MatMul, whose output
/// rank must be known).
fn layer_kind(
    graph: &Graph,
    node: &Node,
    output_rank: Option<usize>,
) -> Result<Option<(Layer, usize)>> {
    let group = || -> Result<usize> { Ok(Window::in_graph(graph, node)?.map_or(1, |w| w.group)) };
    Ok(match node.kind {
        OpKind::Conv => Some((Layer::Conv { group: group()? }, 1)),
        OpKind::ConvTranspose => Some((Layer::ConvTranspose { group: group()? }, 1)),
        OpKind::Gemm => {
            let trans_b = node.int("transB")?.unwrap_or(0) != 0;
            let alpha = node.float("alpha")?.unwrap_or(1.0) as f64;
            let beta = node.float("beta")?.unwrap_or(1.0) as f64;
            Some((
                Layer::Gemm {
                    trans_b,
                    alpha,
                    beta,
                },
                1,
            ))
        }
        OpKind::MatMul => output_rank
            .filter(|&r| r >= 2)
            .map(|r| (Layer::MatMul, r - 1)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Model;
    use crate::ir::builder::ModelBuilder;
    use crate::passes::test_models::{
        assert_exact, conv_attrs, count, model, positive, rewritten, weights,
    };
    use crate::testing::max_relative_error;
    use proptest::prelude::*;

    /// x → Conv(pads) → the given elementwise chain → y.
    fn conv_then(pads: &[i64], chain: &[(&str, &[&str])]) -> Model {
        let mut b = ModelBuilder::new(13)
            .input("x", &[2, 4, 6, 6])
            .initializer("w", weights(&[6, 2, 3, 3], 1))
            .initializer("b", weights(&[6], 2))
            .initializer("per_channel", positive(&[1, 6, 1, 1], 3))
            .initializer("rank3", weights(&[6, 1, 1], 4))
            .initializer("scalar", positive(&[], 5))
            .initializer("per_row", weights(&[1, 1, 4, 1], 6))
            .node(
                "Conv",
                &["x", "w", "b"],
                &["h0"],
                conv_attrs(pads, &[1, 1], 2),
            );
        for (i, (op, inputs)) in chain.iter().enumerate() {
            b = b.node(op, inputs, &[&format!("h{}", i + 1)], Attributes::default());
        }
        model(b.output(&format!("h{}", chain.len())))
    }

    #[test]
    fn fires_on_every_per_channel_op_after_a_grouped_conv() {
        let chain: &[(&str, &[&str])] = &[
            ("Mul", &["h0", "per_channel"]),
            ("Add", &["rank3", "h1"]),
            ("Sub", &["h2", "scalar"]),
            ("Sub", &["per_channel", "h3"]),
            ("Div", &["h4", "rank3"]),
        ];
        let after = assert_exact(
            &FoldAffine,
            &conv_then(&[1, 0, 2, 1], chain),
            &[vec![2, 4, 6, 6]],
        );
        assert_eq!(after.graph.node_count(), 1);
    }

    #[test]
    fn fires_on_a_scale_into_a_following_padded_conv() {
        let b = ModelBuilder::new(13)
            .input("x", &[2, 4, 6, 6])
            .initializer("s", positive(&[4, 1, 1], 1))
            .initializer("w", weights(&[8, 4, 3, 3], 2))
            .node("Mul", &["x", "s"], &["h"], Attributes::default())
            .node(
                "Conv",
                &["h", "w"],
                &["y"],
                conv_attrs(&[1, 1, 1, 1], &[2, 2], 1),
            );
        let after = assert_exact(&FoldAffine, &model(b.output("y")), &[vec![2, 4, 6, 6]]);
        assert_eq!(count(&after, "Mul"), 0);
    }

    #[test]
    fn fires_on_an_affine_before_and_after_gemms() {
        let b = ModelBuilder::new(13)
            .input("x", &[3, 5])
            .initializer("s", positive(&[5], 1))
            .initializer("t", weights(&[1, 5], 2))
            .initializer("w1", weights(&[4, 5], 3))
            .initializer("c1", weights(&[4], 4))
            .initializer("s2", positive(&[1, 4], 5))
            .node("Mul", &["x", "s"], &["h1"], Attributes::default())
            .node("Sub", &["h1", "t"], &["h2"], Attributes::default())
            .node(
                "Gemm",
                &["h2", "w1", "c1"],
                &["h3"],
                Attributes::default()
                    .with_int("transB", 1)
                    .with_float("alpha", 0.5)
                    .with_float("beta", 3.0),
            )
            .node("Div", &["h3", "s2"], &["y"], Attributes::default());
        let after = assert_exact(&FoldAffine, &model(b.output("y")), &[vec![3, 5]]);
        assert_eq!(after.graph.node_count(), 1);
    }

    #[test]
    fn skips_on_a_shift_into_a_following_padded_conv_because_it_is_wrong_at_the_border() {
        let b = ModelBuilder::new(13)
            .input("x", &[2, 4, 6, 6])
            .initializer("t", weights(&[1, 4, 1, 1], 1))
            .initializer("w", weights(&[8, 4, 3, 3], 2))
            .node("Add", &["x", "t"], &["h"], Attributes::default())
            .node(
                "Conv",
                &["h", "w"],
                &["y"],
                conv_attrs(&[1, 1, 1, 1], &[1, 1], 1),
            );
        assert_eq!(rewritten(&FoldAffine, &model(b.output("y"))).1.patches, 0);
    }

    #[test]
    fn skips_on_a_constant_varying_along_a_spatial_axis_because_it_is_not_per_channel() {
        let before = conv_then(&[1, 1, 1, 1], &[("Mul", &["h0", "per_row"])]);
        assert_eq!(rewritten(&FoldAffine, &before).1.patches, 0);
    }

    #[test]
    fn skips_on_a_constant_divided_by_the_value_because_that_is_not_affine() {
        let before = conv_then(&[1, 1, 1, 1], &[("Div", &["per_channel", "h0"])]);
        assert_eq!(rewritten(&FoldAffine, &before).1.patches, 0);
    }

    #[test]
    fn skips_on_a_shift_after_a_matmul_because_it_would_only_move() {
        let b = ModelBuilder::new(13)
            .input("x", &[2, 3, 5])
            .initializer("m", weights(&[5, 4], 1))
            .initializer("t", weights(&[4], 2))
            .node("MatMul", &["x", "m"], &["h"], Attributes::default())
            .node("Add", &["h", "t"], &["y"], Attributes::default());
        assert_eq!(rewritten(&FoldAffine, &model(b.output("y"))).1.patches, 0);
    }

    #[test]
    fn fires_on_a_scale_after_a_3d_matmul_along_its_last_axis() {
        let b = ModelBuilder::new(13)
            .input("x", &[2, 3, 5])
            .initializer("m", weights(&[5, 4], 1))
            .initializer("s", positive(&[4], 2))
            .node("MatMul", &["x", "m"], &["h"], Attributes::default())
            .node("Mul", &["h", "s"], &["y"], Attributes::default());
        let after = assert_exact(&FoldAffine, &model(b.output("y")), &[vec![2, 3, 5]]);
        assert_eq!(after.graph.node_count(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// A per-channel Mul then Add on either side of a random grouped conv.
        #[test]
        fn folds_keep_random_grouped_convs_exact(
            groups in 1usize..=3,
            (in_per_group, out_per_group) in (1usize..=2, 1usize..=2),
            (kernel, stride) in (1usize..=3, 1i64..=2),
            pads in prop::array::uniform4(0i64..=1),
            affine_first in any::<bool>(),
            seed in 0u64..1000,
        ) {
            let (c_in, c_out) = (groups * in_per_group, groups * out_per_group);
            let channels = if affine_first { c_in } else { c_out };
            let conv_input = if affine_first { "h2" } else { "x" };
            let affine_input = if affine_first { "x" } else { "h0" };
            let b = ModelBuilder::new(13)
                .input("x", &[2, c_in as i64, 6, 5])
                .initializer("w", weights(&[c_out, in_per_group, kernel, kernel], seed))
                .initializer("s", positive(&[channels, 1, 1], seed + 1))
                .initializer("t", weights(&[1, channels, 1, 1], seed + 2))
                .node("Conv", &[conv_input, "w"], &["h0"], conv_attrs(&pads, &[stride, stride], groups as i64))
                .node("Add", &[affine_input, "t"], &["h1"], Attributes::default())
                .node("Mul", &["h1", "s"], &["h2"], Attributes::default());
            let before = model(b.output(if affine_first { "h0" } else { "h2" }));
            let (after, stats) = rewritten(&FoldAffine, &before);
            prop_assert!(stats.patches >= 1);
            let error = max_relative_error(&before, &after, &[vec![2, c_in, 6, 5]], seed);
            prop_assert!(error <= 1e-4, "relative error {error}");
        }
    }
}
