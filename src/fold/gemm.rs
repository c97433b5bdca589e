//! Dense affine maps y = W·x + b on the rows of a 2-D activation, and their composition
//! (`docs/ARCHITECTURE.md`, folding rule 4, dense chains).
//!
//! A Gemm with `transA = 0` computes Y = α·X·B' + β·C, B' = B or Bᵀ (`transB`), C one row
//! broadcast down the batch: per row, y = W·x + b with `W[o][i] = α·B'[i][o]` and
//! `b[o] = β·C[o]`. A MatMul by a constant 2-D B is the same with α = 1 and no bias.
//! Two maps in sequence are one: W = W2·W1, b = W2·b1 + b2. (`transA = 1` contracts over
//! the batch, which is no per-row map.) Values are read as f64, combined in f64 and
//! written back in the weight's own element type.
//!
//! A convolution on a map of fixed size is such a map too, between the flattened input
//! and output (folding rule 5, convolution into a dense layer): each output value is a
//! weighted sum of input values plus its channel's bias, so its matrix is exact — zero
//! padding only leaves taps out.

use crate::error::Result;
use crate::fold::conv::Conv2d;
use crate::ir::{DataType, Tensor};

/// y = weight·x + bias, weight `[outputs, inputs]` row-major.
///
/// ```
/// use onnx_shallow::fold::gemm::Dense;
/// use onnx_shallow::ir::Tensor;
/// // A MatMul by B = [[1, 2]] ([K = 1, N = 2]), then a Gemm summing its two outputs, plus 1.
/// let double = Dense::from_matmul(&Tensor::from_f32(vec![1, 2], &[1.0, 2.0])).unwrap();
/// let sum = Dense::from_gemm(
///     &Tensor::from_f32(vec![1, 2], &[1.0, 1.0]),
///     Some(&Tensor::from_f32(vec![1], &[1.0])),
///     true,
///     1.0,
///     1.0,
/// )
/// .unwrap();
/// let both = double.then(&sum).unwrap();
/// assert_eq!((both.weight, both.bias), (vec![3.0], vec![1.0]));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
    pub inputs: usize,
    pub outputs: usize,
}

impl Dense {
    /// A Gemm (`transA = 0`) with constant B and bias C (absent, or one row: `[]`, `[1]`,
    /// `[N]` or `[1, N]`). `None` for anything else.
    pub fn from_gemm(
        b: &Tensor,
        c: Option<&Tensor>,
        trans_b: bool,
        alpha: f64,
        beta: f64,
    ) -> Option<Dense> {
        let Dense {
            weight,
            inputs,
            outputs,
            ..
        } = Dense::from_matrix(b, trans_b)?;
        let bias = match c {
            None => vec![0.0; outputs],
            Some(c) => row_bias(c, outputs)?,
        };
        Some(Dense {
            weight: weight.iter().map(|w| alpha * w).collect(),
            bias: bias.iter().map(|b| beta * b).collect(),
            inputs,
            outputs,
        })
    }

    /// A MatMul by a constant 2-D B ([K, N]).
    pub fn from_matmul(b: &Tensor) -> Option<Dense> {
        Dense::from_matrix(b, false)
    }

    /// The convolution on a [C, H, W] input of `input_hw` as the map from the flattened
    /// input to the flattened output (both in [channel, y, x] order). `None` when the
    /// window does not fit, or when the matrix would have more than `max_elements`.
    pub fn from_conv(conv: &Conv2d, input_hw: [usize; 2], max_elements: usize) -> Option<Dense> {
        let out_hw = [
            conv.output_size(0, input_hw[0])?,
            conv.output_size(1, input_hw[1])?,
        ];
        let plane = out_hw[0] * out_hw[1];
        let inputs = conv.in_channels * input_hw[0] * input_hw[1];
        let outputs = conv.out_channels * plane;
        if inputs.checked_mul(outputs)? > max_elements {
            return None;
        }
        let mut weight = vec![0.0; outputs * inputs];
        conv.for_each_product(input_hw, |out, read, w| weight[out * inputs + read] += w)?;
        let bias = conv
            .bias
            .iter()
            .flat_map(|&b| std::iter::repeat_n(b, plane))
            .collect();
        Some(Dense {
            weight,
            bias,
            inputs,
            outputs,
        })
    }

    /// The same map with its outputs in another order: output k of the result is output
    /// `order[k]` of `self` (what a permutation of the output, such as a Transpose before
    /// a Flatten, does). `None` when `order` is no permutation of the outputs.
    pub fn with_outputs_in_order(&self, order: &[usize]) -> Option<Dense> {
        let mut seen = vec![false; self.outputs];
        for &k in order {
            if std::mem::replace(seen.get_mut(k)?, true) {
                return None;
            }
        }
        if order.len() != self.outputs {
            return None;
        }
        let row = |k: usize| &self.weight[k * self.inputs..(k + 1) * self.inputs];
        Some(Dense {
            weight: order.iter().flat_map(|&k| row(k).iter().copied()).collect(),
            bias: order.iter().map(|&k| self.bias[k]).collect(),
            inputs: self.inputs,
            outputs: self.outputs,
        })
    }

    /// `self`, then `next`: W = W2·W1, b = W2·b1 + b2. `None` when the widths differ.
    pub fn then(&self, next: &Dense) -> Option<Dense> {
        if next.inputs != self.outputs {
            return None;
        }
        let mut weight = vec![0.0; next.outputs * self.inputs];
        let mut bias = next.bias.clone();
        for o in 0..next.outputs {
            for k in 0..self.outputs {
                let w2 = next.weight[o * next.inputs + k];
                bias[o] += w2 * self.bias[k];
                let row = &self.weight[k * self.inputs..(k + 1) * self.inputs];
                for (w, w1) in weight[o * self.inputs..(o + 1) * self.inputs]
                    .iter_mut()
                    .zip(row)
                {
                    *w += w2 * w1;
                }
            }
        }
        Some(Dense {
            weight,
            bias,
            inputs: self.inputs,
            outputs: next.outputs,
        })
    }

    /// The Gemm operands for `transB = 1`, α = β = 1, stored as `dtype`: B `[outputs,
    /// inputs]` and C `[outputs]` (none when the bias is zero).
    pub fn gemm_operands(&self, dtype: DataType) -> Result<(Tensor, Option<Tensor>)> {
        let weight = Tensor::from_f64(dtype, vec![self.outputs, self.inputs], &self.weight)?;
        let bias = if self.bias.iter().any(|&b| b != 0.0) {
            Some(Tensor::from_f64(dtype, vec![self.outputs], &self.bias)?)
        } else {
            None
        };
        Ok((weight, bias))
    }

    /// The map of a float matrix B of [K, N] ([N, K] when `transposed`), without bias.
    fn from_matrix(b: &Tensor, transposed: bool) -> Option<Dense> {
        let &[rows, columns] = b.dims() else {
            return None;
        };
        if !b.dtype().is_float() {
            return None;
        }
        let values = b.to_f64()?;
        let (outputs, inputs) = if transposed {
            (rows, columns)
        } else {
            (columns, rows)
        };
        let weight = (0..outputs * inputs)
            .map(|e| {
                let (o, i) = (e / inputs, e % inputs);
                if transposed {
                    values[e]
                } else {
                    values[i * columns + o]
                }
            })
            .collect();
        Some(Dense {
            weight,
            bias: vec![0.0; outputs],
            inputs,
            outputs,
        })
    }
}

/// A bias that is one row of `outputs` values, or one value broadcast to all of them.
fn row_bias(c: &Tensor, outputs: usize) -> Option<Vec<f64>> {
    let is_row = c.dims().len() <= 2 && c.dims().iter().rev().skip(1).all(|&d| d == 1);
    let values = c.to_f64().filter(|_| is_row && c.dtype().is_float())?;
    match values.len() {
        1 => Some(vec![values[0]; outputs]),
        n if n == outputs => Some(values),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(dims: &[usize], values: &[f32]) -> Tensor {
        Tensor::from_f32(dims.to_vec(), values)
    }

    /// y = W·x + b on one row.
    fn apply(map: &Dense, x: &[f64]) -> Vec<f64> {
        (0..map.outputs)
            .map(|o| {
                let row = &map.weight[o * map.inputs..(o + 1) * map.inputs];
                row.iter().zip(x).map(|(w, x)| w * x).sum::<f64>() + map.bias[o]
            })
            .collect()
    }

    #[test]
    fn a_matmul_reads_b_as_inputs_by_outputs() {
        // B [K = 2, N = 3]: y[o] = Σ_i x[i]·B[i][o].
        let b = matrix(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let map = Dense::from_matmul(&b).unwrap();
        assert_eq!((map.inputs, map.outputs), (2, 3));
        assert_eq!(apply(&map, &[1.0, 10.0]), vec![41.0, 52.0, 63.0]);
    }

    #[test]
    fn trans_b_reads_b_as_outputs_by_inputs() {
        let b = matrix(&[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let map = Dense::from_gemm(&b, None, true, 1.0, 1.0).unwrap();
        assert_eq!(apply(&map, &[1.0, 10.0]), vec![41.0, 52.0, 63.0]);
    }

    #[test]
    fn alpha_scales_the_product_and_beta_the_bias() {
        let b = matrix(&[1, 2], &[1.0, 2.0]);
        let c = matrix(&[1, 2], &[10.0, 20.0]);
        let map = Dense::from_gemm(&b, Some(&c), false, 2.0, 0.5).unwrap();
        assert_eq!(apply(&map, &[3.0]), vec![11.0, 22.0]);
    }

    #[test]
    fn a_one_value_bias_broadcasts_to_every_output() {
        let b = matrix(&[1, 3], &[1.0, 1.0, 1.0]);
        let c = matrix(&[1], &[5.0]);
        let map = Dense::from_gemm(&b, Some(&c), false, 1.0, 1.0).unwrap();
        assert_eq!(map.bias, vec![5.0; 3]);
    }

    #[test]
    fn skips_a_bias_that_varies_down_the_rows_or_has_the_wrong_width() {
        let b = matrix(&[1, 2], &[1.0, 2.0]);
        let per_row = matrix(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let too_wide = matrix(&[3], &[1.0, 2.0, 3.0]);
        assert_eq!(Dense::from_gemm(&b, Some(&per_row), false, 1.0, 1.0), None);
        assert_eq!(Dense::from_gemm(&b, Some(&too_wide), false, 1.0, 1.0), None);
    }

    #[test]
    fn skips_a_weight_that_is_not_a_float_matrix() {
        assert_eq!(Dense::from_matmul(&matrix(&[2, 2, 1], &[1.0; 4])), None);
        assert_eq!(
            Dense::from_matmul(&Tensor::from_i64(vec![1, 1], &[1])),
            None
        );
    }

    #[test]
    fn composition_applies_the_first_map_then_the_second() {
        let first = Dense::from_gemm(
            &matrix(&[3, 2], &[1.0, -2.0, 0.5, 3.0, -1.0, 1.0]),
            Some(&matrix(&[3], &[0.1, -0.2, 0.3])),
            true,
            1.5,
            2.0,
        )
        .unwrap();
        let second = Dense::from_gemm(
            &matrix(&[3, 2], &[2.0, 1.0, -1.0, 0.5, 0.25, -3.0]),
            Some(&matrix(&[1, 2], &[1.0, -1.0])),
            false,
            0.5,
            1.0,
        )
        .unwrap();
        let folded = first.then(&second).unwrap();
        let x = [0.7, -1.3];
        let expected = apply(&second, &apply(&first, &x));
        for (y, e) in apply(&folded, &x).iter().zip(&expected) {
            assert!((y - e).abs() < 1e-12, "{y} != {e}");
        }
        assert_eq!(second.then(&second), None);
    }

    #[test]
    fn a_conv_as_a_matrix_computes_what_the_conv_computes() {
        use crate::calib::random::Rng;
        use crate::fold::conv::FeatureMap;
        let mut rng = Rng::new(11);
        // Grouped, strided, dilated, asymmetrically padded, with bias.
        let conv = Conv2d {
            weight: (0..6 * 2 * 3 * 2).map(|_| rng.normal()).collect(),
            bias: (0..6).map(|_| rng.normal()).collect(),
            out_channels: 6,
            in_channels: 4,
            group: 2,
            kernel: [3, 2],
            stride: [2, 1],
            dilation: [1, 2],
            pads: [1, 0, 2, 1],
        };
        let hw = [5, 4];
        let input = FeatureMap {
            channels: 4,
            hw,
            values: (0..4 * 5 * 4).map(|_| rng.normal()).collect(),
        };
        let map = Dense::from_conv(&conv, hw, 1 << 20).unwrap();
        let expected = conv.apply(&input).unwrap();
        assert_eq!(map.outputs, expected.values.len());
        for (y, e) in apply(&map, &input.values).iter().zip(&expected.values) {
            assert!((y - e).abs() < 1e-12, "{y} != {e}");
        }
        assert_eq!(
            Dense::from_conv(&conv, hw, map.inputs * map.outputs - 1),
            None
        );
    }

    #[test]
    fn outputs_in_another_order_are_the_same_rows_permuted() {
        let map = Dense::from_gemm(
            &matrix(&[3, 1], &[1.0, 2.0, 3.0]),
            Some(&matrix(&[3], &[10.0, 20.0, 30.0])),
            true,
            1.0,
            1.0,
        )
        .unwrap();
        let reordered = map.with_outputs_in_order(&[2, 0, 1]).unwrap();
        assert_eq!(apply(&reordered, &[1.0]), vec![33.0, 11.0, 22.0]);
        assert_eq!(map.with_outputs_in_order(&[0, 0, 1]), None);
        assert_eq!(map.with_outputs_in_order(&[0, 1]), None);
    }

    #[test]
    fn operands_keep_the_weight_type_and_drop_a_zero_bias() {
        let map = Dense::from_matmul(&matrix(&[2, 1], &[1.0, 2.0])).unwrap();
        let (weight, bias) = map.gemm_operands(DataType::Float16).unwrap();
        assert_eq!(
            (weight.dtype(), weight.dims()),
            (DataType::Float16, &[1, 2][..])
        );
        assert!(bias.is_none());
    }
}
