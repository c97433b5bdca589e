//! `fold_batchnorm`: an inference-mode BatchNormalization folds into the linear layer
//! before it, or into the one after it — as the per-channel affine it is, through the
//! same fold as `fold_affine`.
//!
//! - **Pattern**: `Conv | ConvTranspose | Gemm | MatMul → BatchNormalization` and
//!   `BatchNormalization → Conv | Gemm`, with the conditions of `fold_affine` (the channel
//!   axis is axis 1, so a MatMul qualifies only with a 2-D output). The node must be in
//!   inference mode (`training_mode` unset or 0, `spatial` unset or 1), with constant
//!   1-D γ, β, μ, σ² and its running-statistics outputs unused.
//! - **Algebra**: y = γ·(x − μ)/√(σ² + ε) + β = s·x + t with s = γ/√(σ² + ε),
//!   t = β − μ·s; then `fold::affine`.
//! - **Exactness**: as `fold_affine`: into the layer before always; into the layer after
//!   when it is unpadded. Within 1e-4 relative (f32). A BatchNormalization that cannot
//!   fold stays as it is.
//! - **Profitability**: always: one node fewer, the layer costs the same.
//! - **Ordering**: after `matmul_add_to_gemm` (a MatMul+Add is a Gemm by then), before
//!   `fold_affine` (so Mul/Add chains fold into the already folded layer).

use crate::error::Result;
use crate::ir::shape::Shapes;
use crate::ir::{Graph, Node, NodeId, OpKind, Patch};
use crate::passes::fold_affine::{AffineNode, fold_into_layer};
use crate::passes::matching::constant_input;
use crate::passes::{Ctx, Rule};

pub(crate) struct FoldBatchNorm;

impl Rule for FoldBatchNorm {
    fn name(&self) -> &'static str {
        "fold_batchnorm"
    }

    fn rewrite(
        &self,
        graph: &Graph,
        id: NodeId,
        shapes: &Shapes,
        _: &mut Ctx,
    ) -> Result<Option<Patch>> {
        match batch_norm_affine(graph, graph.node(id))? {
            Some(affine) => fold_into_layer(self.name(), graph, id, &affine, shapes),
            None => Ok(None),
        }
    }
}

/// The affine map an inference-mode BatchNormalization computes along axis 1.
fn batch_norm_affine(graph: &Graph, node: &Node) -> Result<Option<AffineNode>> {
    if node.kind != OpKind::BatchNormalization {
        return Ok(None);
    }
    let training = node.int("training_mode")?.unwrap_or(0) != 0;
    let per_activation = node.int("spatial")?.unwrap_or(1) == 0;
    let statistics_read = node
        .outputs
        .iter()
        .skip(1)
        .flatten()
        .any(|&v| !graph.users(v).is_empty() || graph.is_output(v));
    let (Some(data), Some(output)) = (node.input(0), node.output(0)) else {
        return Ok(None);
    };
    if training || per_activation || statistics_read {
        return Ok(None);
    }
    let parameters: Option<Vec<Vec<f64>>> = (1..=4)
        .map(|slot| {
            constant_input(graph, node, slot)
                .filter(|t| t.dims().len() == 1)
                .and_then(|t| t.to_f64())
        })
        .collect();
    let Some([gamma, beta, mean, var]) = parameters.and_then(|p| <[Vec<f64>; 4]>::try_from(p).ok())
    else {
        return Ok(None);
    };
    let channels = gamma.len();
    if [&beta, &mean, &var].iter().any(|p| p.len() != channels) {
        return Ok(None);
    }
    let epsilon = node.float("epsilon")?.unwrap_or(1e-5) as f64;
    let map = crate::fold::affine::ChannelAffine::batch_norm(&gamma, &beta, &mean, &var, epsilon);
    Ok(Some(AffineNode {
        data,
        output,
        axis: Some(1),
        scale: map.scale,
        shift: map.shift,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, DataType, Model, Tensor};
    use crate::passes::test_models::{
        assert_exact, conv_attrs, count, model, positive, rewritten, weights,
    };
    use crate::testing::max_relative_error;

    /// γ, β, μ, σ² of `channels` channels, as initializers.
    fn with_bn_params(b: ModelBuilder, channels: usize) -> ModelBuilder {
        b.initializer("gamma", positive(&[channels], 11))
            .initializer("beta", weights(&[channels], 12))
            .initializer("mean", weights(&[channels], 13))
            .initializer("var", positive(&[channels], 14))
    }

    const BN_INPUTS: [&str; 5] = ["h", "gamma", "beta", "mean", "var"];

    fn layer_then_bn(
        input: &[i64],
        op: &str,
        inputs: &[&str],
        attributes: Attributes,
        channels: usize,
    ) -> Model {
        let b = ModelBuilder::new(15)
            .input("x", input)
            .initializer("w", weights(&[8, 4, 3, 3], 1))
            .initializer("w_t", weights(&[4, 2, 3, 3], 2))
            .initializer("b", weights(&[8], 3))
            .initializer("g", weights(&[6, 5], 4))
            .initializer("c", weights(&[1, 6], 5))
            .initializer("m", weights(&[5, 6], 6));
        model(
            with_bn_params(b, channels)
                .node(op, inputs, &["h"], attributes)
                .node(
                    "BatchNormalization",
                    &BN_INPUTS,
                    &["y"],
                    Attributes::default(),
                )
                .output("y"),
        )
    }

    fn assert_folds(before: &Model, dims: &[usize]) -> Model {
        let after = assert_exact(&FoldBatchNorm, before, &[dims.to_vec()]);
        assert_eq!(count(&after, "BatchNormalization"), 0);
        after
    }

    #[test]
    fn fires_on_conv_with_and_without_bias_and_asymmetric_pads() {
        let attrs = conv_attrs(&[0, 1, 2, 1], &[2, 1], 1);
        assert_folds(
            &layer_then_bn(&[2, 4, 9, 8], "Conv", &["x", "w", "b"], attrs.clone(), 8),
            &[2, 4, 9, 8],
        );
        assert_folds(
            &layer_then_bn(&[2, 4, 9, 8], "Conv", &["x", "w"], attrs, 8),
            &[2, 4, 9, 8],
        );
    }

    #[test]
    fn fires_on_grouped_and_depthwise_conv() {
        let grouped = layer_then_bn(
            &[1, 8, 6, 6],
            "Conv",
            &["x", "w", "b"],
            conv_attrs(&[1, 1, 1, 1], &[1, 1], 2),
            8,
        );
        assert_folds(&grouped, &[1, 8, 6, 6]);
        let depthwise = ModelBuilder::new(15)
            .input("x", &[1, 4, 6, 6])
            .initializer("w", weights(&[4, 1, 3, 3], 1))
            .node(
                "Conv",
                &["x", "w"],
                &["h"],
                conv_attrs(&[1, 1, 1, 1], &[1, 1], 4),
            );
        let depthwise = with_bn_params(depthwise, 4).node(
            "BatchNormalization",
            &BN_INPUTS,
            &["y"],
            Attributes::default(),
        );
        assert_folds(&model(depthwise.output("y")), &[1, 4, 6, 6]);
    }

    #[test]
    fn fires_on_grouped_conv_transpose() {
        let attrs = Attributes::default()
            .with_int("group", 2)
            .with_ints("strides", &[2, 2])
            .with_ints("pads", &[1, 0, 0, 1]);
        let before = layer_then_bn(&[1, 4, 5, 5], "ConvTranspose", &["x", "w_t"], attrs, 4);
        assert_folds(&before, &[1, 4, 5, 5]);
    }

    #[test]
    fn fires_on_gemm_with_trans_b_alpha_beta_and_row_bias() {
        let attrs = Attributes::default()
            .with_int("transB", 1)
            .with_float("alpha", 0.5)
            .with_float("beta", 2.0);
        let after = assert_folds(
            &layer_then_bn(&[3, 5], "Gemm", &["x", "g", "c"], attrs, 6),
            &[3, 5],
        );
        let gemm = after
            .graph
            .nodes()
            .map(|(_, n)| n)
            .find(|n| n.op() == "Gemm")
            .unwrap();
        assert_eq!(gemm.float("beta").unwrap(), Some(1.0));
    }

    #[test]
    fn fires_on_2d_matmul_leaving_an_add() {
        let after = assert_folds(
            &layer_then_bn(&[3, 5], "MatMul", &["x", "m"], Attributes::default(), 6),
            &[3, 5],
        );
        assert_eq!((count(&after, "MatMul"), count(&after, "Add")), (1, 1));
    }

    #[test]
    fn fires_on_batchnorm_before_an_unpadded_conv() {
        let b = with_bn_params(ModelBuilder::new(15).input("h", &[2, 4, 5, 5]), 4)
            .initializer("w", weights(&[8, 4, 1, 1], 1))
            .node(
                "BatchNormalization",
                &BN_INPUTS,
                &["n"],
                Attributes::default(),
            )
            .node(
                "Conv",
                &["n", "w"],
                &["y"],
                conv_attrs(&[0, 0, 0, 0], &[2, 2], 1),
            );
        assert_folds(&model(b.output("y")), &[2, 4, 5, 5]);
    }

    #[test]
    fn skips_on_batchnorm_before_a_padded_conv_because_its_shift_is_wrong_at_the_border() {
        let b = with_bn_params(ModelBuilder::new(15).input("h", &[2, 8, 5, 5]), 8)
            .initializer("w", weights(&[4, 8, 3, 3], 1))
            .node(
                "BatchNormalization",
                &BN_INPUTS,
                &["n"],
                Attributes::default(),
            )
            .node(
                "Conv",
                &["n", "w"],
                &["y"],
                conv_attrs(&[1, 1, 1, 1], &[1, 1], 1),
            );
        assert_eq!(
            rewritten(&FoldBatchNorm, &model(b.output("y"))).1.patches,
            0
        );
    }

    /// x → Conv 3×3 (padded) → h → BatchNormalization(`attrs`) → y.
    fn padded_conv_then_bn(attrs: Attributes) -> ModelBuilder {
        with_bn_params(ModelBuilder::new(15).input("x", &[2, 4, 5, 5]), 8)
            .initializer("w", weights(&[8, 4, 3, 3], 1))
            .node(
                "Conv",
                &["x", "w"],
                &["h"],
                conv_attrs(&[1, 1, 1, 1], &[1, 1], 1),
            )
            .node("BatchNormalization", &BN_INPUTS, &["y"], attrs)
    }

    #[test]
    fn skips_on_training_mode_because_it_normalises_with_batch_statistics() {
        let b = padded_conv_then_bn(Attributes::default().with_int("training_mode", 1));
        assert_eq!(
            rewritten(&FoldBatchNorm, &model(b.output("y"))).1.patches,
            0
        );
    }

    #[test]
    fn skips_on_a_conv_read_twice_because_its_other_reader_needs_the_unnormalised_value() {
        let b = padded_conv_then_bn(Attributes::default()).node(
            "Relu",
            &["h"],
            &["z"],
            Attributes::default(),
        );
        assert_eq!(
            rewritten(&FoldBatchNorm, &model(b.output("y").output("z")))
                .1
                .patches,
            0
        );
    }

    #[test]
    fn fp16_weights_stay_fp16_within_fp16_precision() {
        let half = |t: Tensor| {
            Tensor::from_f64(DataType::Float16, t.dims().to_vec(), &t.to_f64().unwrap()).unwrap()
        };
        let to = |dtype: DataType| Attributes::default().with_int("to", dtype.onnx_code() as i64);
        let b = ModelBuilder::new(15)
            .input("x", &[2, 4, 6, 6])
            .initializer("w", half(weights(&[8, 4, 3, 3], 1)))
            .initializer("gamma", half(positive(&[8], 11)))
            .initializer("beta", half(weights(&[8], 12)))
            .initializer("mean", half(weights(&[8], 13)))
            .initializer("var", half(positive(&[8], 14)))
            .node("Cast", &["x"], &["x16"], to(DataType::Float16))
            .node(
                "Conv",
                &["x16", "w"],
                &["h"],
                conv_attrs(&[1, 1, 1, 1], &[1, 1], 1),
            )
            .node(
                "BatchNormalization",
                &BN_INPUTS,
                &["n"],
                Attributes::default(),
            )
            .node("Cast", &["n"], &["y"], to(DataType::Float));
        let before = model(b.output("y"));
        let (after, stats) = rewritten(&FoldBatchNorm, &before);
        assert_eq!(stats.patches, 1);
        let conv = after
            .graph
            .nodes()
            .map(|(_, n)| n)
            .find(|n| n.op() == "Conv")
            .unwrap();
        let weight = after.graph.constant(conv.input(1).unwrap()).unwrap();
        assert_eq!(weight.dtype(), DataType::Float16);
        // Both models compute in fp16 (2⁻¹¹ relative rounding per operation).
        let error = max_relative_error(&before, &after, &[vec![2, 4, 6, 6]], 7);
        assert!(error <= 1e-2, "relative error {error:e}");
    }
}
