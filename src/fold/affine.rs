//! Per-channel affine maps y[c] = s[c]·x[c] + t[c], and how a linear layer absorbs one
//! (`docs/ARCHITECTURE.md`, folding rule 6, per-channel affine).
//!
//! A layer computes y[o] = α·Σ_e W[e]·x[in(e)] + β·b[o] over the weight elements e of
//! output channel o, where in(e) is the input channel element e reads.
//!
//! - Affine after the layer: s[o]·y[o] + t[o] = α·Σ_e (s[o]·W[e])·x[in(e)] + (s[o]·β·b[o] + t[o]).
//! - Affine before the layer: y[o] = α·Σ_e (W[e]·s[in(e)])·x[in(e)] + (β·b[o] + α·Σ_e W[e]·t[in(e)]).
//!   The bias term assumes every tap reads a real input: exact only for an unpadded
//!   layer, whose windows never reach into zero padding (callers check; a pure scale
//!   is exact through padding since s·0 = 0).
//!
//! BatchNormalization in inference mode is such a map: s = γ/√(σ² + ε), t = β − μ·s.
//! Values are read as f64, combined in f64 and written back in the weight's own element
//! type (fp16 stays fp16).

use crate::ir::{DataType, Tensor};

/// y[c] = scale[c]·x[c] + shift[c].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChannelAffine {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
}

impl ChannelAffine {
    /// Inference-mode BatchNormalization: s = γ/√(σ² + ε), t = β − μ·s.
    pub fn batch_norm(
        gamma: &[f64],
        beta: &[f64],
        mean: &[f64],
        var: &[f64],
        epsilon: f64,
    ) -> ChannelAffine {
        let scale: Vec<f64> = gamma
            .iter()
            .zip(var)
            .map(|(g, v)| g / (v + epsilon).sqrt())
            .collect();
        let shift = beta
            .iter()
            .zip(mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        ChannelAffine { scale, shift }
    }

    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    pub fn has_shift(&self) -> bool {
        self.shift.iter().any(|&t| t != 0.0)
    }

    pub fn has_scale(&self) -> bool {
        self.scale.iter().any(|&s| s != 1.0)
    }
}

/// The layers that absorb affines, and what decides their weight layout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Layer {
    /// W [O, I/g, k…], bias [O].
    Conv { group: usize },
    /// W [I, O/g, k…], bias [O].
    ConvTranspose { group: usize },
    /// Y = α·A·B + β·C: B [K, N] ([N, K] when transposed), C broadcast from [N].
    Gemm {
        trans_b: bool,
        alpha: f64,
        beta: f64,
    },
    /// Y = A·B: B [K, N], no bias.
    MatMul,
}

impl Layer {
    /// (output channels, input channels) of the layer with weights of `dims`.
    pub fn channels(self, dims: &[usize]) -> Option<(usize, usize)> {
        Layout::of(self, dims).map(|l| (l.outputs, l.inputs))
    }
}

/// Folded parameters. The bias is for β = 1 (Gemm), an Add after the layer (MatMul), or
/// the layer's bias input; `None` when there is none and none is needed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Folded {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

/// `layer` followed by `affine` on its output channels, as one layer. `None` when the
/// tensors do not have the layout the layer needs.
pub(crate) fn absorb_following(
    layer: Layer,
    weight: &Tensor,
    bias: Option<&Tensor>,
    affine: &ChannelAffine,
) -> Option<Folded> {
    let layout = Layout::of(layer, weight.dims())?;
    let (w, b) = parameters(&layout, weight, bias, affine.channels() == layout.outputs)?;
    let (s, t) = (&affine.scale, &affine.shift);
    let folded: Vec<f64> = w
        .iter()
        .enumerate()
        .map(|(e, v)| v * s[layout.channels(e).0])
        .collect();
    let new_bias: Vec<f64> = (0..layout.outputs)
        .map(|o| s[o] * layout.beta * b[o] + t[o])
        .collect();
    assemble(
        weight,
        bias,
        folded,
        (bias.is_some() || affine.has_shift()).then_some(new_bias),
    )
}

/// `affine` on the input channels of `layer`, then `layer`, as one layer. Exact only when
/// the layer is unpadded or the affine has no shift (see the module doc). `None` when the
/// tensors do not have the layout the layer needs.
pub(crate) fn absorb_preceding(
    layer: Layer,
    weight: &Tensor,
    bias: Option<&Tensor>,
    affine: &ChannelAffine,
) -> Option<Folded> {
    let layout = Layout::of(layer, weight.dims())?;
    let (w, b) = parameters(&layout, weight, bias, affine.channels() == layout.inputs)?;
    let (s, t) = (&affine.scale, &affine.shift);
    let mut new_bias: Vec<f64> = b.iter().map(|b| layout.beta * b).collect();
    let mut folded = Vec::with_capacity(w.len());
    for (e, v) in w.iter().enumerate() {
        let (o, i) = layout.channels(e);
        folded.push(v * s[i]);
        new_bias[o] += layout.alpha * v * t[i];
    }
    assemble(
        weight,
        bias,
        folded,
        (bias.is_some() || affine.has_shift()).then_some(new_bias),
    )
}

/// The weight as f64 and the bias expanded to one value per output channel (zeros when
/// absent), once the affine's channel count `fits`.
fn parameters(
    layout: &Layout,
    weight: &Tensor,
    bias: Option<&Tensor>,
    fits: bool,
) -> Option<(Vec<f64>, Vec<f64>)> {
    if !fits || !weight.dtype().is_float() {
        return None;
    }
    let bias = match bias {
        None => vec![0.0; layout.outputs],
        Some(b) => match b.to_f64()? {
            v if v.len() == layout.outputs => v,
            v if v.len() == 1 => vec![v[0]; layout.outputs],
            _ => return None,
        },
    };
    Some((weight.to_f64()?, bias))
}

/// The new tensors, in the weight's (and the bias's) own element type.
fn assemble(
    weight: &Tensor,
    bias: Option<&Tensor>,
    folded: Vec<f64>,
    new_bias: Option<Vec<f64>>,
) -> Option<Folded> {
    let weight_out = Tensor::from_f64(weight.dtype(), weight.dims().to_vec(), &folded).ok()?;
    let bias_type: DataType = bias.map_or(weight.dtype(), Tensor::dtype);
    let bias_out = match new_bias {
        Some(values) => Some(Tensor::from_f64(bias_type, vec![values.len()], &values).ok()?),
        None => None,
    };
    Some(Folded {
        weight: weight_out,
        bias: bias_out,
    })
}

/// A weight seen as [leading, second, kernel…] in groups: which of the two leading axes
/// indexes output channels, and how the other one maps to channels through the groups.
struct Layout {
    leading_is_output: bool,
    leading: usize,
    second: usize,
    kernel: usize,
    group: usize,
    outputs: usize,
    inputs: usize,
    alpha: f64,
    beta: f64,
}

impl Layout {
    fn of(layer: Layer, dims: &[usize]) -> Option<Layout> {
        let (leading_is_output, group, alpha, beta) = match layer {
            Layer::Conv { group } => (true, group, 1.0, 1.0),
            Layer::ConvTranspose { group } => (false, group, 1.0, 1.0),
            Layer::Gemm {
                trans_b,
                alpha,
                beta,
            } => (trans_b, 1, alpha, beta),
            Layer::MatMul => (false, 1, 1.0, 1.0),
        };
        let is_matrix = matches!(layer, Layer::Gemm { .. } | Layer::MatMul);
        if dims.len() < 2
            || (is_matrix && dims.len() != 2)
            || group == 0
            || !dims[0].is_multiple_of(group)
        {
            return None;
        }
        let (leading, second) = (dims[0], dims[1]);
        let grouped = second * group;
        let (outputs, inputs) = if leading_is_output {
            (leading, grouped)
        } else {
            (grouped, leading)
        };
        let kernel = dims[2..].iter().product();
        Some(Layout {
            leading_is_output,
            leading,
            second,
            kernel,
            group,
            outputs,
            inputs,
            alpha,
            beta,
        })
    }

    /// (output channel, input channel) of weight element `e`.
    fn channels(&self, e: usize) -> (usize, usize) {
        let lead = e / (self.second * self.kernel);
        let within_group = (e / self.kernel) % self.second;
        let group = lead / (self.leading / self.group);
        let other = group * self.second + within_group;
        if self.leading_is_output {
            (lead, other)
        } else {
            (other, lead)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_f64().unwrap()
    }

    #[test]
    fn batch_norm_is_scale_then_shift() {
        let bn = ChannelAffine::batch_norm(&[2.0], &[1.0], &[3.0], &[3.0], 1.0);
        assert_eq!(
            bn,
            ChannelAffine {
                scale: vec![1.0],
                shift: vec![-2.0]
            }
        );
    }

    #[test]
    fn grouped_conv_maps_each_weight_to_its_group_channels() {
        // 4 outputs, 4 inputs, 2 groups: W [4, 2, 1, 1]; outputs 2, 3 read inputs 2, 3.
        let layout = Layout::of(Layer::Conv { group: 2 }, &[4, 2, 1, 1]).unwrap();
        let channels: Vec<_> = (0..8).map(|e| layout.channels(e)).collect();
        assert_eq!(
            channels,
            [
                (0, 0),
                (0, 1),
                (1, 0),
                (1, 1),
                (2, 2),
                (2, 3),
                (3, 2),
                (3, 3)
            ]
        );
        let transposed = Layout::of(Layer::ConvTranspose { group: 2 }, &[4, 2, 1, 1]).unwrap();
        assert_eq!(transposed.channels(5), (3, 2));
    }

    #[test]
    fn gemm_following_affine_scales_columns_and_folds_beta_into_the_bias() {
        let b = Tensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let c = Tensor::from_f32(vec![2], &[1.0, -1.0]);
        let affine = ChannelAffine {
            scale: vec![2.0, 0.5],
            shift: vec![1.0, 0.0],
        };
        let layer = Layer::Gemm {
            trans_b: false,
            alpha: 1.0,
            beta: 3.0,
        };
        let folded = absorb_following(layer, &b, Some(&c), &affine).unwrap();
        assert_eq!(values(&folded.weight), [2.0, 1.0, 6.0, 2.0]);
        assert_eq!(values(folded.bias.as_ref().unwrap()), [7.0, -1.5]);
    }

    #[test]
    fn gemm_preceding_affine_scales_rows_and_adds_its_shift_through_the_weights() {
        // transB: B [N=1, K=2]; y = 2·(x·s + t)·Bᵀ.
        let b = Tensor::from_f32(vec![1, 2], &[1.0, 3.0]);
        let affine = ChannelAffine {
            scale: vec![2.0, 1.0],
            shift: vec![1.0, -1.0],
        };
        let layer = Layer::Gemm {
            trans_b: true,
            alpha: 2.0,
            beta: 1.0,
        };
        let folded = absorb_preceding(layer, &b, None, &affine).unwrap();
        assert_eq!(values(&folded.weight), [2.0, 3.0]);
        assert_eq!(values(folded.bias.as_ref().unwrap()), [2.0 * (1.0 - 3.0)]);
    }

    #[test]
    fn fp16_weights_stay_fp16() {
        let w = Tensor::from_f64(DataType::Float16, vec![1, 1, 1, 1], &[0.5]).unwrap();
        let affine = ChannelAffine {
            scale: vec![3.0],
            shift: vec![0.0],
        };
        let folded = absorb_following(Layer::Conv { group: 1 }, &w, None, &affine).unwrap();
        assert_eq!(
            (folded.weight.dtype(), values(&folded.weight)),
            (DataType::Float16, vec![1.5])
        );
        assert_eq!(folded.bias, None);
    }

    #[test]
    fn a_channel_count_that_does_not_fit_is_refused() {
        let w = Tensor::from_f32(vec![2, 3, 1, 1], &[1.0; 6]);
        let affine = ChannelAffine {
            scale: vec![1.0; 3],
            shift: vec![0.0; 3],
        };
        assert!(absorb_following(Layer::Conv { group: 1 }, &w, None, &affine).is_none());
        assert!(absorb_preceding(Layer::Conv { group: 1 }, &w, None, &affine).is_some());
    }
}
