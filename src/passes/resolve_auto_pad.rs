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
use crate::ir::{Graph, Node, NodeId, OpKind, Patch, Wire};
use crate::passes::matching::auto_pad;
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
        _: &Ctx,
    ) -> Result<Option<Patch>> {
        let node = graph.node(id);
        if !matches!(
            node.kind,
            OpKind::Conv | OpKind::ConvTranspose | OpKind::AveragePool | OpKind::MaxPool
        ) {
            return Ok(None);
        }
        let mode = auto_pad(node)?;
        if node.int("ceil_mode")?.unwrap_or(0) != 0 {
            return Ok(None);
        }
        let pads = match mode.as_str() {
            "NOTSET" => None,
            "VALID" if node.ints("output_shape")?.is_none() => {
                spatial_rank(node, shapes).map(|n| vec![0; 2 * n])
            }
            "SAME_UPPER" | "SAME_LOWER" => same_pads(node, shapes, mode == "SAME_UPPER")?,
            _ => None,
        };
        let Some(pads) = pads else { return Ok(None) };
        let mut attributes = node.attributes.clone();
        attributes.remove("auto_pad");
        let inputs: Vec<Option<Wire>> = node.inputs.iter().map(|v| v.map(Wire::from)).collect();
        let mut patch = patch(self.name(), &mode.to_lowercase(), node);
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
fn same_pads(node: &Node, shapes: &Shapes, upper: bool) -> Result<Option<Vec<i64>>> {
    let input = node
        .input(0)
        .and_then(|x| shapes.get(x).static_dims())
        .filter(|dims| dims.len() > 2);
    let (Some(input), false) = (input, node.kind == OpKind::ConvTranspose) else {
        return Ok(None);
    };
    let spatial = &input[2..];
    let kernel = match node.ints("kernel_shape")? {
        Some(kernel) => kernel,
        None => match node.input(1).and_then(|w| shapes.get(w).static_dims()) {
            Some(weight) if weight.len() == input.len() => {
                weight[2..].iter().map(|&k| k as i64).collect()
            }
            _ => return Ok(None),
        },
    };
    let ones = vec![1; spatial.len()];
    let strides = node.ints("strides")?.unwrap_or_else(|| ones.clone());
    let dilations = node.ints("dilations")?.unwrap_or(ones);
    if [kernel.len(), strides.len(), dilations.len()]
        .iter()
        .any(|&n| n != spatial.len())
        || strides.contains(&0)
    {
        return Ok(None);
    }
    let (mut begin, mut end) = (Vec::new(), Vec::new());
    for (((&n, &k), &s), &d) in spatial.iter().zip(&kernel).zip(&strides).zip(&dilations) {
        let n = n as i64;
        let outputs = (n + s - 1) / s;
        let total = ((outputs - 1) * s + d * (k - 1) + 1 - n).max(0);
        let (small, large) = (total / 2, total - total / 2);
        begin.push(if upper { small } else { large });
        end.push(if upper { large } else { small });
    }
    Ok(Some([begin, end].concat()))
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
