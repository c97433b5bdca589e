//! `resolve_auto_pad`: `auto_pad` on Conv, ConvTranspose, AveragePool and MaxPool becomes
//! explicit `pads`.
//!
//! - **Pattern**: `op(auto_pad = VALID)` → `op(pads = 0…)`;
//!   `op(auto_pad = SAME_UPPER | SAME_LOWER)` → `op(pads = p)` for Conv and the pools,
//!   when the input's spatial dims are static in the declared model.
//! - **Algebra**: SAME gives ⌈n/s⌉ outputs: the total padding along an axis is
//!   max((⌈n/s⌉ − 1)·s + d·(k − 1) + 1 − n, 0), split evenly with the odd one at the end
//!   (SAME_UPPER) or at the beginning (SAME_LOWER).
//! - **Exactness**: bit-exact, for the declared dims only — which is why it needs static
//!   ones (never pinned dims: the padding depends on the size). Not resolved: SAME on a
//!   ConvTranspose (the specification and runtimes have disagreed on which end gets the odd
//!   pad), a ConvTranspose with `output_shape` (its pads derive from it), and a pool in
//!   `ceil_mode` (explicit pads count a last partial window that `auto_pad` does not).
//! - **Profitability**: always: nothing changes at run time; the folds that follow read
//!   explicit pads.
//! - **Ordering**: before `fold_pad_into_conv` and the affine folds, which reason about
//!   pads.

use crate::error::Result;
use crate::ir::shape::Shapes;
use crate::ir::window::{AutoPad, Window};
use crate::ir::{Graph, Node, NodeId, OpKind, Patch, Wire};
use crate::passes::{Ctx, Rule, patch};

pub(crate) struct ResolveAutoPad;

impl Rule for ResolveAutoPad {
    fn name(&self) -> &'static str {
        "resolve_auto_pad"
    }

    fn rewrite(
        &self,
        graph: &Graph,
        id: NodeId,
        shapes: &Shapes,
        _: &mut Ctx,
    ) -> Result<Option<Patch>> {
        let node = graph.node(id);
        let Some(window) = Window::in_graph(graph, node)? else {
            return Ok(None);
        };
        if window.ceil_mode {
            return Ok(None);
        }
        let pads = match window.auto_pad {
            AutoPad::NotSet => None,
            AutoPad::Valid if node.ints("output_shape")?.is_none() => {
                spatial_rank(node, shapes).map(|n| vec![0; 2 * n])
            }
            AutoPad::Valid => None,
            AutoPad::SameUpper | AutoPad::SameLower => same_pads(node, &window, shapes),
        };
        let Some(pads) = pads else { return Ok(None) };
        let mut attributes = node.attributes.clone();
        attributes.remove("auto_pad");
        let inputs: Vec<Option<Wire>> = node.inputs.iter().map(|v| v.map(Wire::from)).collect();
        let mut patch = patch(self.name(), &window.auto_pad.name().to_lowercase(), node);
        patch.redefine(
            id,
            node.kind.clone(),
            attributes.with_ints("pads", &pads),
            &inputs,
        );
        Ok(Some(patch))
    }
}

fn spatial_rank(node: &Node, shapes: &Shapes) -> Option<usize> {
    shapes.get(node.input(0)?).rank()?.checked_sub(2)
}

/// The explicit pads that SAME padding amounts to at the input's static dims.
fn same_pads(node: &Node, window: &Window, shapes: &Shapes) -> Option<Vec<i64>> {
    let input = node
        .input(0)
        .and_then(|x| shapes.get(x).static_dims())
        .filter(|dims| dims.len() > 2)?;
    if node.kind == OpKind::ConvTranspose {
        return None;
    }
    let weight = node.input(1).and_then(|w| shapes.get(w).static_dims());
    let axes = window
        .axes(weight.as_ref().and_then(|w| w.get(2..)))
        .ok()
        .filter(|axes| axes.len() == input.len() - 2)?;
    let upper = window.auto_pad == AutoPad::SameUpper;
    let (mut begin, mut end) = (Vec::new(), Vec::new());
    for (axis, &n) in axes.iter().zip(&input[2..]) {
        let (b, e) = axis.same_pads(n, upper)?;
        begin.push(i64::try_from(b).ok()?);
        end.push(i64::try_from(e).ok()?);
    }
    Some([begin, end].concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model};
    use crate::passes::test_models::{assert_exact, model, rewritten, weights};

    fn single(op: &str, input: &[i64], attributes: Attributes) -> Model {
        let inputs: &[&str] = if op == "Conv" { &["x", "w"] } else { &["x"] };
        model(
            ModelBuilder::new(13)
                .input("x", input)
                .initializer("w", weights(&[3, 2, 2, 3], 1))
                .node(op, inputs, &["y"], attributes)
                .output("y"),
        )
    }

    fn resolved_pads(before: &Model, dims: &[usize]) -> Vec<i64> {
        let after = assert_exact(&ResolveAutoPad, before, &[dims.to_vec()]);
        let node = after.graph.nodes().next().unwrap().1;
        assert_eq!(node.string("auto_pad").unwrap(), None);
        node.ints("pads").unwrap().unwrap()
    }

    #[test]
    fn fires_on_same_upper_and_same_lower_with_the_odd_pad_at_opposite_ends() {
        let same = |mode: &str| {
            Attributes::default()
                .with_string("auto_pad", mode)
                .with_ints("strides", &[2, 1])
        };
        // H: 7 → 4 outputs, total (4−1)·2 + 2 − 7 = 1; W: 8 → 8, total 3 − 1 = 2.
        assert_eq!(
            resolved_pads(
                &single("Conv", &[1, 2, 7, 8], same("SAME_UPPER")),
                &[1, 2, 7, 8]
            ),
            [0, 1, 1, 1]
        );
        assert_eq!(
            resolved_pads(
                &single("Conv", &[1, 2, 7, 8], same("SAME_LOWER")),
                &[1, 2, 7, 8]
            ),
            [1, 1, 0, 1]
        );
    }

    #[test]
    fn fires_on_pools_same_and_valid() {
        let pool = |mode: &str| {
            Attributes::default()
                .with_string("auto_pad", mode)
                .with_ints("kernel_shape", &[3, 3])
                .with_ints("strides", &[2, 2])
        };
        assert_eq!(
            resolved_pads(
                &single("MaxPool", &[1, 2, 6, 7], pool("SAME_UPPER")),
                &[1, 2, 6, 7]
            ),
            [0, 1, 1, 1]
        );
        assert_eq!(
            resolved_pads(
                &single("AveragePool", &[1, 2, 6, 7], pool("VALID")),
                &[1, 2, 6, 7]
            ),
            [0, 0, 0, 0]
        );
    }

    #[test]
    fn skips_on_symbolic_spatial_dims_because_the_padding_depends_on_the_size() {
        let same = Attributes::default()
            .with_string("auto_pad", "SAME_UPPER")
            .with_ints("strides", &[2, 2]);
        assert_eq!(
            rewritten(&ResolveAutoPad, &single("Conv", &[1, 2, -1, -1], same))
                .1
                .patches,
            0
        );
    }

    #[test]
    fn skips_on_a_pool_in_ceil_mode_because_explicit_pads_count_a_last_partial_window() {
        let pool = Attributes::default()
            .with_string("auto_pad", "VALID")
            .with_ints("kernel_shape", &[2, 2])
            .with_ints("strides", &[2, 2])
            .with_int("ceil_mode", 1);
        assert_eq!(
            rewritten(&ResolveAutoPad, &single("MaxPool", &[1, 2, 5, 5], pool))
                .1
                .patches,
            0
        );
    }
}
