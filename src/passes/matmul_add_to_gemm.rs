//! `matmul_add_to_gemm`: a 2-D MatMul followed by the Add of a constant row becomes a
//! Gemm.
//!
//! - **Pattern**: `MatMul(A[M, K], B[K, N]) → Add(·, c)` (either operand order) →
//!   `Gemm(A, B, c)`, when A and B are 2-D, c is a constant row ([], [1], [N] or [1, N]),
//!   and the Add alone reads the MatMul.
//! - **Algebra**: Gemm computes α·A·B + β·C with α = β = 1 and C broadcast over the rows.
//! - **Exactness**: same products and sums; within 1e-4 relative (the runtime may order
//!   the bias addition differently).
//! - **Profitability**: always: one node fewer, and a Gemm is the form the affine and
//!   Gemm∘Gemm folds work on. Not for A of rank > 2 (Gemm is 2-D only).
//! - **Ordering**: after `resolve_reshape_shapes` (a Reshape before the MatMul then has a
//!   known rank); before `fold_batchnorm` and `fold_affine`, so what follows folds into
//!   the Gemm.

use crate::error::Result;
use crate::ir::shape::Shapes;
use crate::ir::{Attributes, Graph, NodeId, OpKind, Patch, Wire};
use crate::passes::matching::is_row_bias;
use crate::passes::{Ctx, Rule, patch};

pub(crate) struct MatMulAddToGemm;

impl Rule for MatMulAddToGemm {
    fn name(&self) -> &'static str {
        "matmul_add_to_gemm"
    }

    fn rewrite(
        &self,
        graph: &Graph,
        id: NodeId,
        shapes: &Shapes,
        _: &mut Ctx,
    ) -> Result<Option<Patch>> {
        let add = graph.node(id);
        let (OpKind::Add, Some(a), Some(b), Some(sum)) =
            (&add.kind, add.input(0), add.input(1), add.output(0))
        else {
            return Ok(None);
        };
        let (product, bias) = if graph.constant(b).is_some() {
            (a, b)
        } else {
            (b, a)
        };
        let (None, Some(row)) = (graph.constant(product), graph.constant(bias)) else {
            return Ok(None);
        };
        let Some(matmul_id) = graph
            .producer(product)
            .filter(|_| graph.has_single_use(product))
        else {
            return Ok(None);
        };
        let matmul = graph.node(matmul_id);
        let (OpKind::MatMul, Some(left), Some(right)) =
            (&matmul.kind, matmul.input(0), matmul.input(1))
        else {
            return Ok(None);
        };
        let columns = shapes.get(right).dim(1);
        let is_2d = |v| shapes.get(v).rank() == Some(2);
        let bias_fits = is_row_bias(row) && (row.numel() == 1 || Some(row.numel()) == columns);
        if !is_2d(left) || !is_2d(right) || !bias_fits {
            return Ok(None);
        }
        let inputs = [
            Some(Wire::from(left)),
            Some(Wire::from(right)),
            Some(Wire::from(bias)),
        ];
        let mut patch = patch(self.name(), "matmul_add", add);
        patch.redefine(matmul_id, OpKind::Gemm, Attributes::default(), &inputs);
        patch.shunt(sum, product);
        Ok(Some(patch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Model;
    use crate::ir::builder::ModelBuilder;
    use crate::passes::test_models::{assert_exact, count, model, rewritten, weights};

    fn matmul_add(input: &[i64], bias: &[usize], bias_first: bool) -> Model {
        let add_inputs: &[&str] = if bias_first { &["c", "h"] } else { &["h", "c"] };
        model(
            ModelBuilder::new(13)
                .input("x", input)
                .initializer("b", weights(&[5, 4], 1))
                .initializer("c", weights(bias, 2))
                .node("MatMul", &["x", "b"], &["h"], Attributes::default())
                .node("Add", add_inputs, &["y"], Attributes::default())
                .output("y"),
        )
    }

    #[test]
    fn fires_on_a_2d_matmul_and_a_row_bias_in_either_order() {
        for (bias, bias_first) in [(&[4][..], false), (&[1, 4][..], true), (&[][..], false)] {
            let after = assert_exact(
                &MatMulAddToGemm,
                &matmul_add(&[3, 5], bias, bias_first),
                &[vec![3, 5]],
            );
            assert_eq!((count(&after, "Gemm"), after.graph.node_count()), (1, 1));
            assert_eq!(after.graph.value(after.graph.outputs()[0]).name, "y");
        }
    }

    #[test]
    fn skips_on_a_3d_matmul_because_gemm_is_2d() {
        assert_eq!(
            rewritten(&MatMulAddToGemm, &matmul_add(&[2, 3, 5], &[4], false))
                .1
                .patches,
            0
        );
    }

    #[test]
    fn skips_on_a_bias_varying_down_the_rows_because_it_is_no_row() {
        assert_eq!(
            rewritten(&MatMulAddToGemm, &matmul_add(&[3, 5], &[3, 4], false))
                .1
                .patches,
            0
        );
    }
}
