//! `constant_to_initializer`: `Constant` nodes become initializers.
//!
//! - **Pattern**: `Constant(value | value_float(s) | value_int(s))` → an initializer of
//!   the same name, type and dims. (`sparse_value` and `value_string(s)` keep the node
//!   opaque, so it stays.)
//! - **Algebra**: none; the tensor moves from a node attribute to the graph.
//! - **Exactness**: bit-exact.
//! - **Profitability**: always: the other rules read weights only from initializers
//!   (exporters such as PaddlePaddle keep every weight in a Constant node).
//! - **Ordering**: first after dead-code elimination, so every later pass sees the
//!   weights.

use crate::error::Result;
use crate::ir::shape::Shapes;
use crate::ir::{Graph, Node, NodeId, OpKind, Patch, Tensor};
use crate::passes::{Ctx, Rule, patch};

pub(crate) struct ConstantToInitializer;

impl Rule for ConstantToInitializer {
    fn name(&self) -> &'static str {
        "constant_to_initializer"
    }

    fn rewrite(&self, graph: &Graph, id: NodeId, _: &Shapes, _: &mut Ctx) -> Result<Option<Patch>> {
        let node = graph.node(id);
        let (OpKind::Constant, Some(output)) = (&node.kind, node.output(0)) else {
            return Ok(None);
        };
        let Some(tensor) = constant_value(node)? else {
            return Ok(None);
        };
        let mut patch = patch(self.name(), "constant", node);
        let initializer = patch.constant(&graph.value(output).name, tensor);
        patch.shunt(output, initializer);
        Ok(Some(patch))
    }
}

/// The tensor a Constant node holds, whichever attribute holds it.
fn constant_value(node: &Node) -> Result<Option<Tensor>> {
    if let Some(tensor) = node.tensor("value")? {
        return Ok(Some(tensor));
    }
    if let Some(v) = node.float("value_float")? {
        return Ok(Some(Tensor::from_f32(vec![], &[v])));
    }
    if let Some(v) = node.floats("value_floats")? {
        return Ok(Some(Tensor::from_f32(vec![v.len()], &v)));
    }
    if let Some(v) = node.int("value_int")? {
        return Ok(Some(Tensor::from_i64(vec![], &[v])));
    }
    Ok(node
        .ints("value_ints")?
        .map(|v| Tensor::from_i64(vec![v.len()], &v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attributes;
    use crate::ir::builder::ModelBuilder;
    use crate::passes::test_models::{EXACT, count, model, rewritten};
    use crate::testing::max_relative_error;

    fn constant_then_add(attributes: Attributes) -> crate::ir::Model {
        model(
            ModelBuilder::new(13)
                .input("x", &[2, 3])
                .node("Constant", &[], &["c"], attributes)
                .node("Add", &["x", "c"], &["y"], Attributes::default())
                .output("y"),
        )
    }

    #[test]
    fn fires_on_every_value_attribute_and_keeps_the_name() {
        let tensor = Tensor::from_f32(vec![3], &[1.0, -2.0, 0.5]).to_proto("");
        for attributes in [
            Attributes::default().with_tensor("value", tensor),
            Attributes::default().with_float("value_float", 1.5),
            Attributes::default().with_floats("value_floats", &[1.0, -2.0, 0.5]),
        ] {
            let before = constant_then_add(attributes);
            let (after, stats) = rewritten(&ConstantToInitializer, &before);
            assert_eq!((stats.patches, count(&after, "Constant")), (1, 0));
            let c = after
                .graph
                .value_by_name("c")
                .expect("the initializer keeps the name");
            assert!(after.graph.constant(c).is_some());
            assert!(max_relative_error(&before, &after, &[vec![2, 3]], 1) <= EXACT);
        }
    }

    #[test]
    fn fires_on_integer_attributes() {
        let g = model(
            ModelBuilder::new(13)
                .input("x", &[2, 3])
                .node(
                    "Constant",
                    &[],
                    &["i"],
                    Attributes::default().with_int("value_int", 4),
                )
                .node(
                    "Constant",
                    &[],
                    &["s"],
                    Attributes::default().with_ints("value_ints", &[3, 2]),
                )
                .node("Reshape", &["x", "s"], &["y"], Attributes::default())
                .output("y"),
        );
        let (after, _) = rewritten(&ConstantToInitializer, &g);
        assert_eq!(count(&after, "Constant"), 0);
        let s = after.graph.value_by_name("s").unwrap();
        assert_eq!(after.graph.constant(s).unwrap().to_i64(), Some(vec![3, 2]));
    }

    #[test]
    fn fires_on_a_constant_graph_output_through_an_identity() {
        let tensor = Tensor::from_f32(vec![1], &[2.0]).to_proto("");
        let g = model(
            ModelBuilder::new(13)
                .input("x", &[1])
                .node(
                    "Constant",
                    &[],
                    &["c"],
                    Attributes::default().with_tensor("value", tensor),
                )
                .output("c"),
        );
        let (after, _) = rewritten(&ConstantToInitializer, &g);
        assert_eq!(
            (count(&after, "Constant"), count(&after, "Identity")),
            (0, 1)
        );
        assert_eq!(after.graph.value(after.graph.outputs()[0]).name, "c");
    }
}
