//! `fuse_hardswish`: a HardSwish written out as `x · Clip(x + 3, 0, 6) / 6` (as
//! PaddlePaddle exports it) becomes one HardSwish node, or a HardSigmoid and a Mul
//! before opset 14.
//!
//! - **Pattern**: `Add(x, 3) → Clip(0, 6) → Mul(x, ·) → Div(·, 6)`, the Div (or a Mul
//!   by 1/6) also before the Mul (see `activation`) → `HardSwish(x)` from opset 14,
//!   else `Mul(x, HardSigmoid(x; α = 1/6, β = 1/2))`. The last node is redefined in
//!   place, so its output keeps its name.
//! - **Algebra**: Clip(x + 3, 0, 6)/6 = max(0, min(1, x/6 + 1/2)) = HardSigmoid(x; 1/6,
//!   1/2), and HardSwish(x) = x · HardSigmoid(x; 1/6, 1/2).
//! - **Exactness**: equal in real arithmetic; in f32 the operations round in another
//!   order (x/6 + 1/2 instead of (x + 3)/6), a few ulps apart, within 1e-4 relative.
//! - **Profitability**: always: four nodes become one or two. And it keeps the
//!   activation whole: left written out, `fold_affine` moves the /6 into the following
//!   layer, and what is left no longer reads as a HardSwish to `linearize` or the gates.
//! - **Ordering**: after `fold_constants` (the constants must be initializers); before
//!   `fold_batchnorm` and `fold_affine`, which would fold the /6 away.

use crate::error::Result;
use crate::ir::shape::Shapes;
use crate::ir::{Attributes, Graph, NodeId, OpKind, Patch, Wire};
use crate::passes::activation::written_out_hardswish;
use crate::passes::{Ctx, Rule, patch};

pub(crate) struct FuseHardSwish;

/// The first opset with a HardSwish operator.
const HARDSWISH_OPSET: i64 = 14;

impl Rule for FuseHardSwish {
    fn name(&self) -> &'static str {
        "fuse_hardswish"
    }

    fn rewrite(&self, graph: &Graph, id: NodeId, _: &Shapes, _: &mut Ctx) -> Result<Option<Patch>> {
        let Some(hardswish) = written_out_hardswish(graph, id)? else {
            return Ok(None);
        };
        let root = graph.node(id);
        let x = Some(Wire::from(hardswish.input));
        let mut patch = patch(self.name(), "written_out", root);
        if graph.opset() >= HARDSWISH_OPSET {
            patch.redefine(id, OpKind::HardSwish, Attributes::default(), &[x]);
        } else {
            let gate = Attributes::default()
                .with_float("alpha", 1.0 / 6.0)
                .with_float("beta", 0.5);
            let name = format!("{}_hardsigmoid", root.name);
            let gate = patch.node(&name, OpKind::HardSigmoid, gate, &[x], 1)[0];
            patch.redefine(id, OpKind::Mul, Attributes::default(), &[x, Some(gate)]);
        }
        Ok(Some(patch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Model;
    use crate::ir::builder::ModelBuilder;
    use crate::passes::activation::forms::{Form, WRITTEN_OUT, between_convs, input_dims};
    use crate::passes::activation::{ActivationKind, activations};
    use crate::passes::test_models::{assert_exact, count, model, rewritten};
    use crate::passes::{self, run_pipeline};

    fn kinds(model: &Model) -> Vec<ActivationKind> {
        let found = activations(&model.graph).unwrap();
        found.into_iter().map(|a| a.kind).collect()
    }

    #[test]
    fn fires_on_every_written_out_form_at_opset_14_as_one_hardswish() {
        for form in WRITTEN_OUT {
            let after = assert_exact(&FuseHardSwish, &between_convs(14, form), &input_dims());
            assert_eq!(count(&after, "HardSwish"), 1, "{form:?}");
            assert_eq!(after.graph.node_count(), 3, "{form:?}");
            assert_eq!(kinds(&after), [ActivationKind::HardSwish], "{form:?}");
        }
    }

    #[test]
    fn fires_on_every_written_out_form_at_opset_11_as_a_hardsigmoid_and_a_mul() {
        for form in WRITTEN_OUT {
            let after = assert_exact(&FuseHardSwish, &between_convs(11, form), &input_dims());
            let counts = [count(&after, "HardSigmoid"), count(&after, "Mul")];
            assert_eq!(counts, [1, 1], "{form:?}");
            assert_eq!(after.graph.node_count(), 4, "{form:?}");
            assert_eq!(kinds(&after), [ActivationKind::HardSwish], "{form:?}");
        }
    }

    #[test]
    fn fires_on_a_form_producing_a_graph_output_and_keeps_its_name() {
        let b = ModelBuilder::new(11).input("h", &[2, 3]);
        let before = model(Form::WrittenOutDivThenMul.write(b).output("a"));
        let after = assert_exact(&FuseHardSwish, &before, &[vec![2, 3]]);
        assert_eq!(after.graph.value(after.graph.outputs()[0]).name, "a");
    }

    #[test]
    fn skips_on_the_other_hardswish_forms_because_they_are_fused_already() {
        for form in [Form::HardSwish, Form::HardSigmoidTimesX] {
            let before = between_convs(form.opset(), form);
            assert_eq!(rewritten(&FuseHardSwish, &before).1.patches, 0, "{form:?}");
        }
    }

    #[test]
    fn canonical_passes_keep_a_written_out_hardswish_whole() {
        let mut model = between_convs(11, Form::WrittenOutMulThenDiv);
        run_pipeline(
            &passes::canonical(),
            &mut model.graph,
            &mut Default::default(),
        )
        .unwrap();
        assert_eq!(kinds(&model), [ActivationKind::HardSwish]);
        assert_eq!(count(&model, "Conv"), 2);
    }
}
