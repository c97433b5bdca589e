//! `fold_pad_into_conv`: a zero `Pad` in front of a Conv (or of an AveragePool that counts
//! padding) becomes the layer's own padding.
//!
//! - **Pattern**: `Pad(x, pads, mode = constant, value = 0) → Conv` → `Conv(x)` with
//!   `pads += pads` (asymmetric allowed), when only spatial axes are padded, by
//!   non-negative amounts, and the Conv alone reads the Pad. Same for
//!   `AveragePool(count_include_pad = 1, ceil_mode = 0)`. Pads and value come as
//!   attributes before opset 11 and as constant inputs after (a Pad with `axes` stays).
//!   This is how exporters that compute "same" padding at run time (Shape → … → Pad before
//!   every strided conv) end up with plain Convs, once `fold_constants` has made the pads
//!   constant.
//! - **Algebra**: a Conv zero-pads its input by its `pads` before the window sum; two zero
//!   paddings in a row are one of the summed width.
//! - **Exactness**: bit-exact. A MaxPool never absorbs a zero Pad: it pads with −∞, and
//!   0 ≠ −∞ wherever a window sees only padding and negatives. An AveragePool that does
//!   not count padding would divide by fewer elements than the padded input had; in
//!   `ceil_mode` its last partial window would change.
//! - **Profitability**: always: one node and one copy of the feature map fewer.
//! - **Ordering**: after `fold_constants` (run-time pads become constant) and
//!   `resolve_auto_pad` (a SAME conv has no explicit pads to add to).

use crate::error::Result;
use crate::ir::shape::Shapes;
use crate::ir::window::{AutoPad, Window};
use crate::ir::{Graph, Node, NodeId, OpKind, Patch, Wire};
use crate::passes::matching::{constant_input, ints_attribute_or_input, sole_reader};
use crate::passes::{Ctx, Rule, patch};

pub(crate) struct FoldPadIntoConv;

impl Rule for FoldPadIntoConv {
    fn name(&self) -> &'static str {
        "fold_pad_into_conv"
    }

    fn rewrite(&self, graph: &Graph, id: NodeId, _: &Shapes, _: &mut Ctx) -> Result<Option<Patch>> {
        let node = graph.node(id);
        let (OpKind::Pad, Some(data), Some(padded)) = (&node.kind, node.input(0), node.output(0))
        else {
            return Ok(None);
        };
        let Some(layer_id) = sole_reader(graph, padded) else {
            return Ok(None);
        };
        let layer = graph.node(layer_id);
        let Some(added) = zero_spatial_pads(graph, node)? else {
            return Ok(None);
        };
        let Some(window) = Window::in_graph(graph, layer)? else {
            return Ok(None);
        };
        if layer.input(0) != Some(padded) || !absorbs_zero_padding(layer, &window) {
            return Ok(None);
        }
        let Some(pads) = window.pads(added.len() / 2) else {
            return Ok(None);
        };
        let summed: Vec<i64> = pads
            .iter()
            .zip(&added)
            .map(|(&p, a)| p as i64 + a)
            .collect();
        let mut inputs: Vec<Option<Wire>> =
            layer.inputs.iter().map(|v| v.map(Wire::from)).collect();
        inputs[0] = Some(data.into());
        let mut patch = patch(self.name(), layer.op(), node);
        patch.redefine(
            layer_id,
            layer.kind.clone(),
            layer.attributes.clone().with_ints("pads", &summed),
            &inputs,
        );
        Ok(Some(patch))
    }
}

/// The spatial pads (begins, then ends) of a Pad that adds zeros on spatial axes only.
fn zero_spatial_pads(graph: &Graph, pad: &Node) -> Result<Option<Vec<i64>>> {
    let constant_mode = pad.string("mode")?.is_none_or(|m| m == "constant");
    let zero_value = match pad.input(2) {
        None => pad.float("value")?.unwrap_or(0.0) == 0.0,
        Some(_) => constant_input(graph, pad, 2)
            .and_then(|t| t.to_f64())
            .is_some_and(|v| v.iter().all(|&x| x == 0.0)),
    };
    let Some(pads) = ints_attribute_or_input(graph, pad, "pads", 1)? else {
        return Ok(None);
    };
    let rank = pads.len() / 2;
    let well_formed = pads.len() == 2 * rank && rank > 2 && pads.iter().all(|&p| p >= 0);
    if !constant_mode || !zero_value || pad.input(3).is_some() || !well_formed {
        return Ok(None);
    }
    let (begins, ends) = pads.split_at(rank);
    let pads_batch_or_channel = begins[..2].iter().chain(&ends[..2]).any(|&p| p != 0);
    Ok((!pads_batch_or_channel).then(|| [&begins[2..], &ends[2..]].concat()))
}

/// Whether the layer's own padding is zeros that count like input zeros.
fn absorbs_zero_padding(layer: &Node, window: &Window) -> bool {
    window.auto_pad == AutoPad::NotSet
        && match layer.kind {
            OpKind::Conv => true,
            OpKind::AveragePool => window.count_include_pad && !window.ceil_mode,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model, Tensor};
    use crate::passes::fold_constants::FoldConstants;
    use crate::passes::test_models::{
        assert_exact, conv_attrs, count, ints, model, rewritten, weights,
    };

    /// x[1, 4, 7, 6] → Pad → op → y, the Pad in input form (opset 13).
    fn pad_then(pads: &[i64], value: f32, op: &str, attributes: Attributes) -> Model {
        let inputs: &[&str] = if op == "Conv" { &["p", "w"] } else { &["p"] };
        model(
            ModelBuilder::new(13)
                .input("x", &[1, 4, 7, 6])
                .initializer("pads", ints(&[8], pads))
                .initializer("value", Tensor::from_f32(vec![], &[value]))
                .initializer("w", weights(&[4, 2, 3, 3], 1))
                .node(
                    "Pad",
                    &["x", "pads", "value"],
                    &["p"],
                    Attributes::default(),
                )
                .node(op, inputs, &["y"], attributes)
                .output("y"),
        )
    }

    const ASYMMETRIC: [i64; 8] = [0, 0, 1, 2, 0, 0, 2, 0];

    fn assert_folds(before: &Model) -> Vec<i64> {
        let after = assert_exact(&FoldPadIntoConv, before, &[vec![1, 4, 7, 6]]);
        assert_eq!(count(&after, "Pad"), 0);
        after
            .graph
            .nodes()
            .next()
            .unwrap()
            .1
            .ints("pads")
            .unwrap()
            .unwrap()
    }

    #[test]
    fn fires_on_an_asymmetric_pad_before_a_strided_grouped_conv() {
        let pads = assert_folds(&pad_then(
            &ASYMMETRIC,
            0.0,
            "Conv",
            conv_attrs(&[1, 0, 0, 1], &[2, 2], 2),
        ));
        assert_eq!(pads, [2, 2, 2, 1]);
    }

    #[test]
    fn fires_on_the_attribute_form_before_opset_11() {
        let before = model(
            ModelBuilder::new(10)
                .input("x", &[1, 4, 7, 6])
                .initializer("w", weights(&[4, 4, 3, 3], 1))
                .node(
                    "Pad",
                    &["x"],
                    &["p"],
                    Attributes::default()
                        .with_ints("pads", &ASYMMETRIC)
                        .with_float("value", 0.0),
                )
                .node("Conv", &["p", "w"], &["y"], Attributes::default())
                .output("y"),
        );
        assert_eq!(assert_folds(&before), [1, 2, 2, 0]);
    }

    #[test]
    fn fires_on_an_average_pool_that_counts_padding() {
        let pool = Attributes::default()
            .with_ints("kernel_shape", &[3, 3])
            .with_int("count_include_pad", 1);
        assert_eq!(
            assert_folds(&pad_then(&ASYMMETRIC, 0.0, "AveragePool", pool)),
            [1, 2, 2, 0]
        );
    }

    #[test]
    fn fires_on_same_padding_computed_at_run_time_once_constants_are_folded() {
        // pads = [0, 0, 8 − H, 8 − W, 0, 0, 0, 0] from the input's (static) shape.
        let before = model(
            ModelBuilder::new(13)
                .input("x", &[1, 4, 7, 6])
                .initializer("w", weights(&[4, 4, 3, 3], 1))
                .initializer("two", ints(&[1], &[2]))
                .initializer("four", ints(&[1], &[4]))
                .initializer("eight", ints(&[2], &[8, 8]))
                .initializer("none", ints(&[2], &[0, 0]))
                .initializer("tail", ints(&[4], &[0, 0, 0, 0]))
                .node("Shape", &["x"], &["s"], Attributes::default())
                .node(
                    "Slice",
                    &["s", "two", "four"],
                    &["hw"],
                    Attributes::default(),
                )
                .node("Sub", &["eight", "hw"], &["missing"], Attributes::default())
                .node(
                    "Concat",
                    &["none", "missing", "tail"],
                    &["pads"],
                    Attributes::default().with_int("axis", 0),
                )
                .node("Pad", &["x", "pads"], &["p"], Attributes::default())
                .node(
                    "Conv",
                    &["p", "w"],
                    &["y"],
                    conv_attrs(&[0, 0, 0, 0], &[2, 2], 1),
                )
                .output("y"),
        );
        let (folded, _) = rewritten(&FoldConstants, &before);
        let after = assert_exact(&FoldPadIntoConv, &folded, &[vec![1, 4, 7, 6]]);
        assert_eq!(after.graph.node_count(), 1);
    }

    #[test]
    fn skips_on_a_max_pool_because_it_pads_with_minus_infinity_not_zero() {
        let pool = Attributes::default().with_ints("kernel_shape", &[2, 2]);
        assert_eq!(
            rewritten(
                &FoldPadIntoConv,
                &pad_then(&ASYMMETRIC, 0.0, "MaxPool", pool)
            )
            .1
            .patches,
            0
        );
    }

    #[test]
    fn skips_on_an_average_pool_that_ignores_padding_because_it_would_divide_by_less() {
        let pool = Attributes::default().with_ints("kernel_shape", &[3, 3]);
        assert_eq!(
            rewritten(
                &FoldPadIntoConv,
                &pad_then(&ASYMMETRIC, 0.0, "AveragePool", pool)
            )
            .1
            .patches,
            0
        );
    }

    #[test]
    fn skips_on_a_nonzero_value_or_a_padded_channel_axis_because_a_conv_pads_spatially_with_zeros()
    {
        let conv = || conv_attrs(&[0, 0, 0, 0], &[1, 1], 2);
        assert_eq!(
            rewritten(
                &FoldPadIntoConv,
                &pad_then(&ASYMMETRIC, 1.0, "Conv", conv())
            )
            .1
            .patches,
            0
        );
        let channel = [0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            rewritten(&FoldPadIntoConv, &pad_then(&channel, 0.0, "Conv", conv()))
                .1
                .patches,
            0
        );
    }
}
