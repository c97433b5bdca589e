//! `remove_identity`: Identity and inference-mode Dropout nodes go; their readers read
//! the input directly.
//!
//! - **Pattern**: `Identity(x)` → `x`; `Dropout(x)` → `x` when it runs in inference mode
//!   (no `training_mode` input or a constant false one; before opset 7, `is_test` set)
//!   and its mask output is unused.
//! - **Algebra**: y = x.
//! - **Exactness**: bit-exact.
//! - **Profitability**: always, except where the node carries a graph output's name for
//!   a value that cannot take that name (a graph input, a constant, another graph output):
//!   removing it would only bring the Identity back, so it stays.
//! - **Ordering**: early, so the matching rules see producers and consumers adjacent.

use crate::error::Result;
use crate::ir::shape::Shapes;
use crate::ir::{Graph, Node, NodeId, OpKind, Patch};
use crate::passes::{Ctx, Rule, patch};

pub(crate) struct RemoveIdentity;

impl Rule for RemoveIdentity {
    fn name(&self) -> &'static str {
        "remove_identity"
    }

    fn rewrite(&self, graph: &Graph, id: NodeId, _: &Shapes, _: &mut Ctx) -> Result<Option<Patch>> {
        let node = graph.node(id);
        let passes_through = match node.kind {
            OpKind::Identity => true,
            OpKind::Dropout => is_inference_dropout(graph, node)?,
            _ => false,
        };
        let (Some(input), Some(output)) = (node.input(0), node.output(0)) else {
            return Ok(None);
        };
        let name_stays = !graph.is_output(output) || graph.can_take_output_name(input);
        if !passes_through || !name_stays || graph.is_captured(output) {
            return Ok(None);
        }
        let mut patch = patch(self.name(), node.op(), node);
        patch.shunt(output, input);
        Ok(Some(patch))
    }
}

fn is_inference_dropout(graph: &Graph, node: &Node) -> Result<bool> {
    let mask_unused = node
        .output(1)
        .is_none_or(|mask| graph.users(mask).is_empty() && !graph.is_output(mask));
    // Dropout-1 and -6 run in training mode unless `is_test` says otherwise.
    let test_mode = graph.opset() >= 7 || node.int("is_test")?.unwrap_or(0) != 0;
    let training = match node.input(2) {
        None => false,
        Some(flag) => graph.constant(flag).and_then(|t| t.to_i64()) != Some(vec![0]),
    };
    Ok(mask_unused && test_mode && !training)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model, Tensor};
    use crate::passes::test_models::{assert_exact, count, model, rewritten};

    fn chain(op: &str, inputs: &[&str], outputs: &[&str], extra: Option<(&str, Tensor)>) -> Model {
        let mut b = ModelBuilder::new(13).input("x", &[2, 3]);
        if let Some((name, t)) = extra {
            b = b.initializer(name, t);
        }
        let b = b
            .node("Relu", &["x"], &["r"], Attributes::default())
            .node(op, inputs, outputs, Attributes::default())
            .node("Sigmoid", &["y"], &["z"], Attributes::default())
            .output("z");
        model(b)
    }

    #[test]
    fn fires_on_identity_and_inference_dropout() {
        let identity = chain("Identity", &["r"], &["y"], None);
        let after = assert_exact(&RemoveIdentity, &identity, &[vec![2, 3]]);
        assert_eq!(count(&after, "Identity"), 0);
        let flag = Tensor::from_f64(crate::ir::DataType::Bool, vec![], &[0.0]).unwrap();
        let dropout = chain("Dropout", &["r", "", "t"], &["y"], Some(("t", flag)));
        let after = assert_exact(&RemoveIdentity, &dropout, &[vec![2, 3]]);
        assert_eq!(count(&after, "Dropout"), 0);
    }

    #[test]
    fn fires_on_an_identity_producing_a_graph_output_and_keeps_its_name() {
        let g = model(
            ModelBuilder::new(13)
                .input("x", &[2])
                .node("Relu", &["x"], &["r"], Attributes::default())
                .node("Identity", &["r"], &["y"], Attributes::default())
                .output("y"),
        );
        let (after, _) = rewritten(&RemoveIdentity, &g);
        assert_eq!(count(&after, "Identity"), 0);
        assert_eq!(after.graph.value(after.graph.outputs()[0]).name, "y");
    }

    #[test]
    fn skips_on_training_dropout_because_it_drops() {
        let flag = Tensor::from_f64(crate::ir::DataType::Bool, vec![], &[1.0]).unwrap();
        let g = chain("Dropout", &["r", "", "t"], &["y"], Some(("t", flag)));
        assert_eq!(rewritten(&RemoveIdentity, &g).1.patches, 0);
    }

    #[test]
    fn skips_on_dropout_whose_mask_is_read_because_the_mask_is_needed() {
        let g = model(
            ModelBuilder::new(13)
                .input("x", &[2])
                .node("Dropout", &["x"], &["y", "mask"], Attributes::default())
                .output("y")
                .output("mask"),
        );
        assert_eq!(rewritten(&RemoveIdentity, &g).1.patches, 0);
    }

    #[test]
    fn skips_on_identity_from_graph_input_to_graph_output_because_it_carries_the_name() {
        let g = model(
            ModelBuilder::new(13)
                .input("x", &[2])
                .node("Identity", &["x"], &["y"], Attributes::default())
                .output("y"),
        );
        assert_eq!(rewritten(&RemoveIdentity, &g).1.patches, 0);
    }
}
