//! `resolve_reshape_shapes`: a Reshape whose target shape is computed at run time from its
//! own input's dims gets a constant target instead, with 0 ("copy this dim") where the
//! computation read the input's dim at the same position — so the model stays
//! batch-agnostic and the shape computation goes.
//!
//! - **Pattern**: `Reshape(x, f(Shape(x), constants))` → `Reshape(x, [k0, …])`, when every
//!   element of the target evaluates to a number or to dim i of x at position i. f is any
//!   chain of Shape, Gather, Slice, Concat, Unsqueeze, Squeeze, Cast, Identity and
//!   Add/Sub/Mul of numbers, evaluated symbolically: each element is a known integer or
//!   "dim j of value v", and dims static in the declared model are numbers. Exporters
//!   write `x.view(x.size(0), -1)` as Shape → Gather(0) → Unsqueeze → Concat([·, −1])
//!   (MTCNN) or Shape → Cast → Slice(0:1) → Cast → Concat([·, 200]) (PP-OCR).
//! - **Algebra**: with `allowzero` = 0 a 0 in the target copies the input's dim at that
//!   position, which is exactly the element the computation produced.
//! - **Exactness**: bit-exact at every input size: only numbers that hold for every input
//!   (static declared dims, constants) and copies of x's own dims appear.
//! - **Profitability**: always: the shape computation becomes dead and goes, and the
//!   reshaped value gets a known rank (and static dims where they are).
//! - **Ordering**: after `fold_constants`; before `matmul_add_to_gemm`, which needs the
//!   rank of the reshaped value.

use crate::error::Result;
use crate::ir::shape::Shapes;
use crate::ir::symbolic::{self, Element};
use crate::ir::{Graph, NodeId, OpKind, Patch, Tensor, Wire};
use crate::passes::{Ctx, Rule, patch};

pub(crate) struct ResolveReshapeShapes;

impl Rule for ResolveReshapeShapes {
    fn name(&self) -> &'static str {
        "resolve_reshape_shapes"
    }

    fn rewrite(
        &self,
        graph: &Graph,
        id: NodeId,
        shapes: &Shapes,
        _: &Ctx,
    ) -> Result<Option<Patch>> {
        let node = graph.node(id);
        let (OpKind::Reshape, Some(data), Some(target)) =
            (&node.kind, node.input(0), node.input(1))
        else {
            return Ok(None);
        };
        if graph.constant(target).is_some() || node.int("allowzero")?.unwrap_or(0) != 0 {
            return Ok(None);
        }
        let Some(symbolic) = symbolic::evaluate(graph, shapes, target)? else {
            return Ok(None);
        };
        let copies_or_numbers: Option<Vec<i64>> = symbolic
            .elements
            .iter()
            .enumerate()
            .map(|(position, element)| match *element {
                Element::Known(k) => Some(k),
                Element::Dim(value, axis) if value == data && axis == position => Some(0),
                Element::Dim(..) => None,
            })
            .collect();
        let Some(values) = copies_or_numbers.filter(|_| !symbolic.scalar) else {
            return Ok(None);
        };
        let mut patch = patch(self.name(), "copy_dims", node);
        let shape = patch.constant(
            &format!("{}_shape", graph.value(target).name),
            Tensor::from_i64(vec![values.len()], &values),
        );
        patch.redefine(
            id,
            OpKind::Reshape,
            node.attributes.clone(),
            &[Some(Wire::from(data)), Some(shape)],
        );
        Ok(Some(patch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model};
    use crate::passes::test_models::{EXACT, assert_exact, count, ints, model, rewritten};
    use crate::testing::max_relative_error;

    fn target_of(after: &Model) -> Vec<i64> {
        let reshape = after
            .graph
            .nodes()
            .map(|(_, n)| n)
            .find(|n| n.op() == "Reshape")
            .unwrap();
        after
            .graph
            .constant(reshape.input(1).unwrap())
            .unwrap()
            .to_i64()
            .unwrap()
    }

    /// Runs the pass and checks the result at batch 2 and 5.
    fn assert_batch_agnostic(before: &Model, rest: &[usize]) -> Model {
        let dims = |batch: usize| vec![[&[batch][..], rest].concat()];
        let after = assert_exact(&ResolveReshapeShapes, before, &dims(2));
        assert!(max_relative_error(before, &after, &dims(5), 3) <= EXACT);
        assert_eq!(count(&after, "Shape"), 0);
        after
    }

    #[test]
    fn fires_on_the_torch_flatten_chain() {
        let before = model(
            ModelBuilder::new(13)
                .input("x", &[-1, 2, 3, 4])
                .initializer("zero", ints(&[], &[0]))
                .initializer("axes", ints(&[1], &[0]))
                .initializer("rest", ints(&[1], &[-1]))
                .node(
                    "Transpose",
                    &["x"],
                    &["t"],
                    Attributes::default().with_ints("perm", &[0, 3, 2, 1]),
                )
                .node("Shape", &["t"], &["s"], Attributes::default())
                .node("Gather", &["s", "zero"], &["n"], Attributes::default())
                .node("Unsqueeze", &["n", "axes"], &["n1"], Attributes::default())
                .node(
                    "Concat",
                    &["n1", "rest"],
                    &["target"],
                    Attributes::default().with_int("axis", 0),
                )
                .node("Reshape", &["t", "target"], &["y"], Attributes::default())
                .output("y"),
        );
        assert_eq!(
            target_of(&assert_batch_agnostic(&before, &[2, 3, 4])),
            [0, -1]
        );
    }

    #[test]
    fn fires_on_the_paddle_flatten_chain_with_casts_and_a_slice() {
        let to = |code: i64| Attributes::default().with_int("to", code);
        let before = model(
            ModelBuilder::new(11)
                .input("x", &[-1, 6, 1, 1])
                .initializer("start", ints(&[1], &[0]))
                .initializer("end", ints(&[1], &[1]))
                .initializer("channels", ints(&[1], &[6]))
                .node("Shape", &["x"], &["s"], Attributes::default())
                .node("Cast", &["s"], &["s32"], to(6))
                .node(
                    "Slice",
                    &["s32", "start", "end", "start"],
                    &["n32"],
                    Attributes::default(),
                )
                .node("Cast", &["n32"], &["n"], to(7))
                .node(
                    "Concat",
                    &["n", "channels"],
                    &["target"],
                    Attributes::default().with_int("axis", -1),
                )
                .node("Reshape", &["x", "target"], &["y"], Attributes::default())
                .output("y"),
        );
        assert_eq!(
            target_of(&assert_batch_agnostic(&before, &[6, 1, 1])),
            [0, 6]
        );
    }

    #[test]
    fn skips_on_a_dim_of_another_value_because_it_need_not_match() {
        let before = model(
            ModelBuilder::new(13)
                .input("x", &[-1, 6])
                .input("z", &[-1, 6])
                .node("Shape", &["z"], &["s"], Attributes::default())
                .node(
                    "Concat",
                    &["s"],
                    &["target"],
                    Attributes::default().with_int("axis", 0),
                )
                .node("Reshape", &["x", "target"], &["y"], Attributes::default())
                .output("y"),
        );
        assert_eq!(rewritten(&ResolveReshapeShapes, &before).1.patches, 0);
    }

    #[test]
    fn skips_on_a_dim_moved_to_another_position_because_zero_copies_in_place() {
        let before = model(
            ModelBuilder::new(13)
                .input("x", &[4, -1])
                .initializer("one", ints(&[1], &[1]))
                .initializer("rest", ints(&[1], &[-1]))
                .node("Shape", &["x"], &["s"], Attributes::default())
                .node("Gather", &["s", "one"], &["n"], Attributes::default())
                .node(
                    "Concat",
                    &["n", "rest"],
                    &["target"],
                    Attributes::default().with_int("axis", 0),
                )
                .node("Reshape", &["x", "target"], &["y"], Attributes::default())
                .output("y"),
        );
        assert_eq!(rewritten(&ResolveReshapeShapes, &before).1.patches, 0);
    }
}
