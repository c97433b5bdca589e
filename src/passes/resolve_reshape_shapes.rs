//! `resolve_reshape_shapes`: a Reshape whose target shape is computed at run time from its
//! own input's dims gets a constant target instead, with 0 ("copy this dim") where the
//! computation read the input's dim at the same position — so the model stays
//! batch-agnostic and the shape computation goes.
//!
//! - **Pattern**: `Reshape(x, f(Shape(v), constants))` → `Reshape(x, [k0, …])`, when every
//!   element of the target evaluates to a number or to x's dim i at position i: dim i of
//!   x itself, or a dim of another value that is the same named symbolic dim as x's dim
//!   i. f is any chain of Shape, Gather, Slice, Concat, Unsqueeze, Squeeze, Cast,
//!   Identity and Add/Sub/Mul of numbers, evaluated symbolically: each element is a known
//!   integer or "dim j of value v", and dims static in the declared model are numbers.
//!   Exporters write `x.view(x.size(0), -1)` as Shape → Gather(0) → Unsqueeze →
//!   Concat([·, −1]) (MTCNN) or Shape → Cast → Slice(0:1) → Cast → Concat([·, 200])
//!   (PP-OCR); `x.view(bs, -1)` with `bs` read from the model's input (EfficientNet-Lite)
//!   reads the batch of the input, the same symbol `N` as x's dim 0.
//! - **Algebra**: with `allowzero` = 0 a 0 in the target copies the input's dim at that
//!   position, which is exactly the element the computation produced. A symbolic dim
//!   (`dim_param`) names one size throughout a graph, so the dim of another value with
//!   the same symbol is that size too; unnamed unknown dims prove nothing.
//! - **Exactness**: bit-exact at every input size the model declares: only numbers that
//!   hold for every input (static declared dims, constants) and copies of x's own dims
//!   appear.
//! - **Profitability**: always: the shape computation becomes dead and goes, and the
//!   reshaped value gets a known rank (and static dims where they are).
//! - **Ordering**: after `fold_constants`; before `matmul_add_to_gemm`, which needs the
//!   rank of the reshaped value.

use crate::error::Result;
use crate::ir::shape::{Dim, Shapes};
use crate::ir::symbolic::{self, Element};
use crate::ir::{Graph, NodeId, OpKind, Patch, Tensor, ValueId, Wire};
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
        _: &mut Ctx,
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
        let symbol =
            |value: ValueId, axis: usize| match shapes.get(value).dims.as_ref()?.get(axis)? {
                Dim::Symbol(name) => Some(name),
                _ => None,
            };
        let copies_or_numbers: Option<Vec<i64>> = symbolic
            .elements
            .iter()
            .enumerate()
            .map(|(position, element)| match *element {
                Element::Known(k) => Some(k),
                Element::Dim(value, axis) if value == data && axis == position => Some(0),
                Element::Dim(value, axis) => {
                    let same =
                        symbol(value, axis).is_some_and(|s| symbol(data, position) == Some(s));
                    same.then_some(0)
                }
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
    use crate::onnx::pb;
    use crate::onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
    use crate::passes::test_models::{EXACT, assert_exact, count, ints, model, rewritten, weights};
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

    /// EfficientNet-Lite's `x.view(bs, -1)`: the batch is read from the model's input,
    /// and the pooled map it reshapes has the same symbolic batch.
    #[test]
    fn fires_on_a_flatten_reading_the_batch_from_the_model_input() {
        let before = model(
            ModelBuilder::new(13)
                .input("x", &[-1, 3, 6, 6])
                .initializer("w", weights(&[4, 3, 3, 3], 1))
                .initializer("zero", ints(&[], &[0]))
                .initializer("axes", ints(&[1], &[0]))
                .initializer("rest", ints(&[1], &[-1]))
                .node("Conv", &["x", "w"], &["c"], Attributes::default())
                .node("GlobalAveragePool", &["c"], &["p"], Attributes::default())
                .node("Shape", &["x"], &["s"], Attributes::default())
                .node("Gather", &["s", "zero"], &["n"], Attributes::default())
                .node("Unsqueeze", &["n", "axes"], &["n1"], Attributes::default())
                .node(
                    "Concat",
                    &["n1", "rest"],
                    &["target"],
                    Attributes::default().with_int("axis", 0),
                )
                .node("Reshape", &["p", "target"], &["y"], Attributes::default())
                .output("y"),
        );
        let after = assert_batch_agnostic(&before, &[3, 6, 6]);
        assert_eq!(target_of(&after), [0, -1]);
        assert_eq!(count(&after, "Gather") + count(&after, "Concat"), 0);
    }

    /// `x` [N, 6] and `z` [M, 6]: z's batch is another symbol, or unnamed.
    #[test]
    fn skips_on_a_dim_of_another_value_because_it_need_not_match() {
        for other in [Some("M"), None] {
            let mut proto = ModelBuilder::new(13)
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
                .output("y")
                .build();
            let z = &mut proto.graph.as_mut().unwrap().input[1];
            let batch = batch_dim(z);
            batch.value = other.map(|name| DimValue::DimParam(name.into()));
            let before = Model::from_proto(proto).unwrap();
            assert_eq!(rewritten(&ResolveReshapeShapes, &before).1.patches, 0);
        }
    }

    /// The first dim of a value's declared type.
    fn batch_dim(info: &mut pb::ValueInfoProto) -> &mut pb::tensor_shape_proto::Dimension {
        let Some(pb::type_proto::Value::TensorType(tensor)) =
            info.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            panic!("a tensor input")
        };
        &mut tensor.shape.as_mut().unwrap().dim[0]
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
