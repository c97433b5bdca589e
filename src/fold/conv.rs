//! Composition of two 2-D convolutions into one (`docs/ARCHITECTURE.md`, folding rules 1,
//! Conv∘Conv, and 2, groups).
//!
//! conv1 (k1, s1, d1, p1, groups g1) then conv2 (k2, s2, d2, p2, g2). Along each spatial
//! axis conv2 reads conv1's output at s2·Y + d2·u − p2, which reads the input at
//! s1·s2·Y + s1·d2·u + d1·a − (p1 + s1·p2). So the composite has stride s1·s2, begin pad
//! p1 + s1·p2, and taps at offsets t = s1·d2·u + d1·a: all multiples of
//! g = gcd(d1, s1·d2), hence dilation g and kernel (K − 1)/g + 1 with
//! K = d1(k1 − 1) + s1·d2(k2 − 1) + 1. The second kernel is in effect dilated by the first
//! stride — forgetting that is the classic bug.
//!
//! ```text
//! W[o, i, t/g] = Σ_m Σ_{u, a : s1·d2·u + d1·a = t} W2[o, m, u] · W1[m, i, a]
//! b[o] = b2[o] + Σ_m (Σ_u W2[o, m, u]) · b1[m]
//! ```
//!
//! Exactness. conv2's zero padding pads conv1's *output*; the composite pads the *input*.
//! They agree when p2 = 0 (exact everywhere; the output sizes agree because
//! ⌊⌊A/s1⌋/s2⌋ = ⌊A/(s1·s2)⌋). When conv1 is an unpadded stride-1 1×1, W1·0 = 0 so the
//! weights still compose exactly and only the bias differs at the border: the exact bias
//! is the pair evaluated on a zero input, a per-position map (`Border::BiasMap`). Any
//! other padded pair is exact only in the interior (`Border::InteriorOnly`).
//!
//! Accumulation is in f64; callers store the result in the weights' own type.

use ndarray::Array2;

use crate::error::{Error, Result};

/// A 2-D convolution's weights and geometry (ONNX semantics: cross-correlation).
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    /// `[out_channels, in_channels / group, kh, kw]`, row-major.
    pub weight: Vec<f64>,
    /// `[out_channels]`; zeros when the layer has none.
    pub bias: Vec<f64>,
    pub out_channels: usize,
    pub in_channels: usize,
    pub group: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// [top, left, bottom, right], as ONNX orders them.
    pub pads: [usize; 4],
}

/// How far a composite agrees with the pair it replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    /// Equal everywhere.
    Exact,
    /// Equal everywhere once a per-position bias map (the pair on a zero input) replaces the bias.
    BiasMap,
    /// Equal only where conv2's window does not reach into its padding.
    InteriorOnly,
}

impl Conv2d {
    fn in_per_group(&self) -> usize {
        self.in_channels / self.group
    }

    fn out_per_group(&self) -> usize {
        self.out_channels / self.group
    }

    fn tap(&self, o: usize, i_local: usize, y: usize, x: usize) -> f64 {
        let [kh, kw] = self.kernel;
        self.weight[((o * self.in_per_group() + i_local) * kh + y) * kw + x]
    }

    /// Checks that the sizes agree with each other.
    pub fn validate(&self) -> Result<()> {
        let [kh, kw] = self.kernel;
        let ok = self.group > 0
            && self.in_channels.is_multiple_of(self.group)
            && self.out_channels.is_multiple_of(self.group)
            && self.weight.len() == self.out_channels * self.in_per_group() * kh * kw
            && self.bias.len() == self.out_channels
            && self
                .stride
                .iter()
                .chain(&self.dilation)
                .chain(&self.kernel)
                .all(|&v| v > 0);
        if ok {
            Ok(())
        } else {
            Err(Error::graph(format!("inconsistent convolution {self:?}")))
        }
    }

    pub fn is_padded(&self) -> bool {
        self.pads.iter().any(|&p| p > 0)
    }

    /// Output size along `axis` for an input of `size`, or `None` when the window does not fit.
    pub fn output_size(&self, axis: usize, size: usize) -> Option<usize> {
        let extent = self.dilation[axis] * (self.kernel[axis] - 1) + 1;
        let padded = size + self.pads[axis] + self.pads[axis + 2];
        padded
            .checked_sub(extent)
            .map(|span| span / self.stride[axis] + 1)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The single convolution equal to `first` then `second` (see the module doc for where
/// it is exact; the returned `Border` says which case applies).
pub fn compose(first: &Conv2d, second: &Conv2d) -> Result<(Conv2d, Border)> {
    first.validate()?;
    second.validate()?;
    if first.out_channels != second.in_channels {
        return Err(Error::graph(format!(
            "cannot compose: the first conv has {} outputs, the second reads {}",
            first.out_channels, second.in_channels
        )));
    }
    let mut stride = [0; 2];
    let mut dilation = [0; 2];
    let mut kernel = [0; 2];
    let mut pads = [0; 4];
    for axis in 0..2 {
        let (s1, d1, k1) = (first.stride[axis], first.dilation[axis], first.kernel[axis]);
        let (s2, d2, k2) = (
            second.stride[axis],
            second.dilation[axis],
            second.kernel[axis],
        );
        let extent = d1 * (k1 - 1) + s1 * d2 * (k2 - 1) + 1;
        let g = gcd(d1, s1 * d2);
        stride[axis] = s1 * s2;
        dilation[axis] = g;
        kernel[axis] = (extent - 1) / g + 1;
        pads[axis] = first.pads[axis] + s1 * second.pads[axis];
        pads[axis + 2] = first.pads[axis + 2] + s1 * second.pads[axis + 2];
    }
    let (weight, group) = compose_weights(first, second, kernel, dilation);
    let bias = compose_bias(first, second);
    let composite = Conv2d {
        weight,
        bias,
        out_channels: second.out_channels,
        in_channels: first.in_channels,
        group,
        kernel,
        stride,
        dilation,
        pads,
    };
    let border = if !second.is_padded() {
        Border::Exact
    } else if first.kernel == [1, 1] && first.stride == [1, 1] && !first.is_padded() {
        if first.bias.iter().all(|&b| b == 0.0) {
            Border::Exact
        } else {
            Border::BiasMap
        }
    } else {
        Border::InteriorOnly
    };
    Ok((composite, border))
}

/// Dense composite weights [O, C, kh, kw], regrouped to the most groups they allow.
fn compose_weights(
    first: &Conv2d,
    second: &Conv2d,
    kernel: [usize; 2],
    dilation: [usize; 2],
) -> (Vec<f64>, usize) {
    let (out_c, in_c) = (second.out_channels, first.in_channels);
    let [kh, kw] = kernel;
    // Where tap u of conv2 and tap a of conv1 land in the composite kernel.
    let target = |(u_y, u_x): (usize, usize), (a_y, a_x): (usize, usize)| {
        let t_y = first.stride[0] * second.dilation[0] * u_y + first.dilation[0] * a_y;
        let t_x = first.stride[1] * second.dilation[1] * u_x + first.dilation[1] * a_x;
        (t_y / dilation[0]) * kw + t_x / dilation[1]
    };
    let mut dense = vec![0.0; out_c * in_c * kh * kw];
    if first.group == 1 && second.group == 1 {
        compose_dense(first, second, &target, &mut dense);
    } else {
        compose_grouped(first, second, &target, &mut dense);
    }
    regroup(dense, out_c, in_c, kh * kw)
}

/// Dense layers: per pair of taps, one matrix product W2[·, ·, u] · W1[·, ·, a].
fn compose_dense(
    first: &Conv2d,
    second: &Conv2d,
    target: &dyn Fn((usize, usize), (usize, usize)) -> usize,
    dense: &mut [f64],
) {
    let (out_c, mid_c, in_c) = (second.out_channels, second.in_channels, first.in_channels);
    let taps_out = dense.len() / (out_c * in_c);
    let matrix = |c: &Conv2d, (y, x): (usize, usize), rows: usize, cols: usize| {
        Array2::from_shape_fn((rows, cols), |(r, k)| c.tap(r, k, y, x))
    };
    let firsts: Vec<_> = taps(first.kernel)
        .map(|a| (a, matrix(first, a, mid_c, in_c)))
        .collect();
    for u in taps(second.kernel) {
        let w2 = matrix(second, u, out_c, mid_c);
        for (a, w1) in &firsts {
            let t = target(u, *a);
            for ((o, i), v) in w2.dot(w1).indexed_iter() {
                dense[(o * in_c + i) * taps_out + t] += v;
            }
        }
    }
}

/// Grouped layers: only the products within groups (depthwise pairs stay cheap).
fn compose_grouped(
    first: &Conv2d,
    second: &Conv2d,
    target: &dyn Fn((usize, usize), (usize, usize)) -> usize,
    dense: &mut [f64],
) {
    let (out_c, in_c) = (second.out_channels, first.in_channels);
    let taps_out = dense.len() / (out_c * in_c);
    for o in 0..out_c {
        let m_base = (o / second.out_per_group()) * second.in_per_group();
        for m_local in 0..second.in_per_group() {
            let m = m_base + m_local;
            let i_base = (m / first.out_per_group()) * first.in_per_group();
            for u in taps(second.kernel) {
                let w2 = second.tap(o, m_local, u.0, u.1);
                if w2 == 0.0 {
                    continue;
                }
                for a in taps(first.kernel) {
                    let t = target(u, a);
                    for i_local in 0..first.in_per_group() {
                        dense[(o * in_c + i_base + i_local) * taps_out + t] +=
                            w2 * first.tap(m, i_local, a.0, a.1);
                    }
                }
            }
        }
    }
}

fn taps(kernel: [usize; 2]) -> impl Iterator<Item = (usize, usize)> {
    (0..kernel[0]).flat_map(move |y| (0..kernel[1]).map(move |x| (y, x)))
}

/// The largest group count g (dividing both channel counts) for which every weight
/// outside the g diagonal blocks is zero, and the weights in grouped layout. Zeros make
/// grouping exact whether they are structural (depthwise∘depthwise) or not.
fn regroup(dense: Vec<f64>, out_c: usize, in_c: usize, taps: usize) -> (Vec<f64>, usize) {
    // The span of inputs each output reads, found once; a grouping fits when every
    // span lies inside its output's block.
    let spans: Vec<Option<(usize, usize)>> = (0..out_c)
        .map(|o| {
            let reads = |i: &usize| {
                dense[(o * in_c + i) * taps..][..taps]
                    .iter()
                    .any(|&w| w != 0.0)
            };
            Some(((0..in_c).find(reads)?, (0..in_c).rfind(reads)?))
        })
        .collect();
    let fits = |g: usize| {
        let (o_per, i_per) = (out_c / g, in_c / g);
        spans.iter().enumerate().all(|(o, span)| {
            span.is_none_or(|(lo, hi)| lo / i_per == o / o_per && hi / i_per == o / o_per)
        })
    };
    let group = (1..=gcd(out_c, in_c))
        .rev()
        .find(|&g| out_c.is_multiple_of(g) && in_c.is_multiple_of(g) && fits(g))
        .unwrap_or(1);
    if group == 1 {
        return (dense, 1);
    }
    let (o_per, i_per) = (out_c / group, in_c / group);
    let mut grouped = Vec::with_capacity(out_c * i_per * taps);
    for o in 0..out_c {
        let first_input = (o / o_per) * i_per;
        grouped.extend_from_slice(&dense[(o * in_c + first_input) * taps..][..i_per * taps]);
    }
    (grouped, group)
}

/// b = b2 + Σ_m (Σ_u W2[o, m, u]) · b1[m]: the interior bias (a constant conv1 output
/// passes through conv2 as the sum of conv2's taps).
pub(crate) fn compose_bias(first: &Conv2d, second: &Conv2d) -> Vec<f64> {
    (0..second.out_channels)
        .map(|o| {
            let m_base = (o / second.out_per_group()) * second.in_per_group();
            let through: f64 = (0..second.in_per_group())
                .map(|m_local| {
                    let tap_sum: f64 = taps(second.kernel)
                        .map(|(y, x)| second.tap(o, m_local, y, x))
                        .sum();
                    tap_sum * first.bias[m_base + m_local]
                })
                .sum();
            second.bias[o] + through
        })
        .collect()
}

/// A feature map [channels, H, W] of f64, for the per-position bias of a fold.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMap {
    pub channels: usize,
    pub hw: [usize; 2],
    pub values: Vec<f64>,
}

impl FeatureMap {
    /// Each channel constant over [H, W].
    pub fn uniform(per_channel: &[f64], hw: [usize; 2]) -> FeatureMap {
        let values = per_channel
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, hw[0] * hw[1]))
            .collect();
        FeatureMap {
            channels: per_channel.len(),
            hw,
            values,
        }
    }

    /// The per-channel value when every channel is constant over [H, W].
    pub fn as_uniform(&self) -> Option<Vec<f64>> {
        let plane = self.hw[0] * self.hw[1];
        self.values
            .chunks(plane.max(1))
            .map(|c| {
                let first = c.first().copied().unwrap_or(0.0);
                let tolerance = 1e-12 * first.abs().max(1.0);
                c.iter()
                    .all(|v| (v - first).abs() <= tolerance)
                    .then_some(first)
            })
            .collect()
    }
}

impl Conv2d {
    /// The convolution evaluated (in f64, zero padding) on one feature map.
    pub fn apply(&self, input: &FeatureMap) -> Option<FeatureMap> {
        if input.channels != self.in_channels {
            return None;
        }
        let hw = [
            self.output_size(0, input.hw[0])?,
            self.output_size(1, input.hw[1])?,
        ];
        let plane = hw[0] * hw[1];
        let mut values: Vec<f64> = self
            .bias
            .iter()
            .flat_map(|&b| std::iter::repeat_n(b, plane))
            .collect();
        self.for_each_product(input.hw, |out, read, weight| {
            values[out] += weight * input.values[read];
        });
        Some(FeatureMap {
            channels: self.out_channels,
            hw,
            values,
        })
    }

    /// Calls `product(output, input, weight)` for every product the convolution computes
    /// on a [C, H, W] input of `input_hw`, with flat [channel, y, x] indices of its output
    /// and input; taps reading padding are left out. Returns the output's spatial dims,
    /// `None` when the window does not fit.
    pub(crate) fn for_each_product(
        &self,
        input_hw: [usize; 2],
        mut product: impl FnMut(usize, usize, f64),
    ) -> Option<[usize; 2]> {
        let hw = [
            self.output_size(0, input_hw[0])?,
            self.output_size(1, input_hw[1])?,
        ];
        let source = |y: usize, u: usize, axis: usize| {
            (y * self.stride[axis] + u * self.dilation[axis])
                .checked_sub(self.pads[axis])
                .filter(|&s| s < input_hw[axis])
        };
        for o in 0..self.out_channels {
            let i_base = (o / self.out_per_group()) * self.in_per_group();
            for (y, x) in taps(hw) {
                let out = (o * hw[0] + y) * hw[1] + x;
                for i_local in 0..self.in_per_group() {
                    let plane = (i_base + i_local) * input_hw[0];
                    for (u, v) in taps(self.kernel) {
                        if let (Some(sy), Some(sx)) = (source(y, u, 0), source(x, v, 1)) {
                            let read = (plane + sy) * input_hw[1] + sx;
                            product(out, read, self.tap(o, i_local, u, v));
                        }
                    }
                }
            }
        }
        Some(hw)
    }

    /// The identity on `channels` channels, as a 1×1 depthwise convolution.
    pub fn identity(channels: usize) -> Conv2d {
        Conv2d {
            weight: vec![1.0; channels],
            bias: vec![0.0; channels],
            out_channels: channels,
            in_channels: channels,
            group: channels,
            kernel: [1, 1],
            stride: [1, 1],
            dilation: [1, 1],
            pads: [0; 4],
        }
    }

    /// Reads no padding and mixes no positions: a 1×1, stride 1, unpadded convolution,
    /// which commutes with zero padding.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && !self.is_padded()
    }

    /// The same convolution without its bias.
    pub fn without_bias(&self) -> Conv2d {
        Conv2d {
            bias: vec![0.0; self.out_channels],
            ..self.clone()
        }
    }
}

/// The single convolution equal to `a(x) + b(x)` (folding rule 8, parallel branches),
/// when both read the same input with the same stride and produce the same output size
/// for every input size (equal d·(k − 1) − p_begin − p_end on each axis). Their taps are
/// placed on a common grid: begin pad P = max(p_a, p_b), dilation the gcd of both
/// dilations and both shifts P − p, so a 1×1 identity lands on the centre tap of a
/// same-padded k×k.
pub fn sum(a: &Conv2d, b: &Conv2d) -> Option<Conv2d> {
    let same_io =
        a.in_channels == b.in_channels && a.out_channels == b.out_channels && a.stride == b.stride;
    if !same_io {
        return None;
    }
    let mut kernel = [0; 2];
    let mut dilation = [0; 2];
    let mut pads = [0; 4];
    for axis in 0..2 {
        let shrink = |c: &Conv2d| {
            c.dilation[axis] as isize * (c.kernel[axis] as isize - 1)
                - c.pads[axis] as isize
                - c.pads[axis + 2] as isize
        };
        if shrink(a) != shrink(b) {
            return None;
        }
        let begin = a.pads[axis].max(b.pads[axis]);
        let g = [a, b].iter().fold(0, |g, c| {
            gcd(gcd(g, c.dilation[axis]), begin - c.pads[axis])
        });
        let extent = [a, b]
            .iter()
            .map(|c| begin - c.pads[axis] + c.dilation[axis] * (c.kernel[axis] - 1))
            .max()?;
        kernel[axis] = extent / g + 1;
        dilation[axis] = g;
        pads[axis] = begin;
        pads[axis + 2] = (extent as isize - begin as isize - shrink(a)) as usize;
    }
    let (out_c, in_c) = (a.out_channels, a.in_channels);
    let [kh, kw] = kernel;
    let mut dense = vec![0.0; out_c * in_c * kh * kw];
    for c in [a, b] {
        let shift = [
            (pads[0] - c.pads[0]) / dilation[0],
            (pads[1] - c.pads[1]) / dilation[1],
        ];
        let step = [c.dilation[0] / dilation[0], c.dilation[1] / dilation[1]];
        for o in 0..out_c {
            let i_base = (o / c.out_per_group()) * c.in_per_group();
            for i_local in 0..c.in_per_group() {
                for (u, v) in taps(c.kernel) {
                    let (y, x) = (shift[0] + step[0] * u, shift[1] + step[1] * v);
                    dense[((o * in_c + i_base + i_local) * kh + y) * kw + x] +=
                        c.tap(o, i_local, u, v);
                }
            }
        }
    }
    let (weight, group) = regroup(dense, out_c, in_c, kh * kw);
    let bias = a.bias.iter().zip(&b.bias).map(|(x, y)| x + y).collect();
    Some(Conv2d {
        weight,
        bias,
        out_channels: out_c,
        in_channels: in_c,
        group,
        kernel,
        stride: a.stride,
        dilation,
        pads,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::calib::random::Rng;
    use crate::ir::builder::ModelBuilder;
    use crate::ir::{Attributes, Model, Tensor};
    use crate::testing::max_relative_error;

    fn conv_node_attributes(c: &Conv2d) -> Attributes {
        let ints = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        Attributes::default()
            .with_ints("kernel_shape", &ints(&c.kernel))
            .with_ints("strides", &ints(&c.stride))
            .with_ints("dilations", &ints(&c.dilation))
            .with_ints("pads", &ints(&c.pads))
            .with_int("group", c.group as i64)
    }

    fn weight_tensor(c: &Conv2d) -> Tensor {
        let dims = vec![
            c.out_channels,
            c.in_channels / c.group,
            c.kernel[0],
            c.kernel[1],
        ];
        Tensor::from_f64(crate::ir::DataType::Float, dims, &c.weight).unwrap()
    }

    /// x → conv → conv → … as a model.
    fn chain_model(convs: &[&Conv2d], bias_map: Option<(&[f64], [usize; 2])>) -> Model {
        let mut builder =
            ModelBuilder::new(13).input("x", &[1, convs[0].in_channels as i64, -1, -1]);
        let mut current = "x".to_string();
        for (k, c) in convs.iter().enumerate() {
            let (w, b, y) = (format!("w{k}"), format!("b{k}"), format!("y{k}"));
            builder = builder
                .initializer(&w, weight_tensor(c))
                .initializer(
                    &b,
                    Tensor::from_f64(crate::ir::DataType::Float, vec![c.out_channels], &c.bias)
                        .unwrap(),
                )
                .node("Conv", &[&current, &w, &b], &[&y], conv_node_attributes(c));
            current = y;
        }
        if let Some((map, [h, w])) = bias_map {
            let dims = vec![1, convs.last().unwrap().out_channels, h, w];
            builder = builder
                .initializer(
                    "map",
                    Tensor::from_f64(crate::ir::DataType::Float, dims, map).unwrap(),
                )
                .node(
                    "Add",
                    &[&current, "map"],
                    &["mapped"],
                    Attributes::default(),
                );
            current = "mapped".into();
        }
        Model::from_proto(builder.output(&current).build()).unwrap()
    }

    fn random_conv(
        rng: &mut Rng,
        in_c: usize,
        out_c: usize,
        group: usize,
        geometry: Geometry,
    ) -> Conv2d {
        let weight_len = out_c * (in_c / group) * geometry.kernel[0] * geometry.kernel[1];
        Conv2d {
            weight: (0..weight_len).map(|_| rng.normal() * 0.5).collect(),
            bias: (0..out_c)
                .map(|_| if geometry.bias { rng.normal() } else { 0.0 })
                .collect(),
            out_channels: out_c,
            in_channels: in_c,
            group,
            kernel: geometry.kernel,
            stride: geometry.stride,
            dilation: geometry.dilation,
            pads: geometry.pads,
        }
    }

    #[derive(Clone, Copy, Debug)]
    struct Geometry {
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        pads: [usize; 4],
        bias: bool,
    }

    impl Geometry {
        /// A k×k kernel, stride 1, dilation 1, unpadded.
        fn plain(k: usize, bias: bool) -> Geometry {
            Geometry {
                kernel: [k, k],
                stride: [1, 1],
                dilation: [1, 1],
                pads: [0; 4],
                bias,
            }
        }
    }

    fn geometry(padded: bool) -> impl Strategy<Value = Geometry> {
        let pad = if padded { 0..3usize } else { 0..1usize };
        (
            1..6usize,
            1..6usize,
            1..3usize,
            1..3usize,
            1..3usize,
            prop::array::uniform4(pad),
            any::<bool>(),
        )
            .prop_map(|(kh, kw, s, dh, dw, pads, bias)| Geometry {
                kernel: [kh, kw],
                stride: [s, if kw > 2 { 1 } else { s }],
                dilation: [dh, dw],
                pads,
                bias,
            })
    }

    /// (in, mid, out, group1, group2): dense, depthwise, and other grouped mixes.
    fn channels() -> impl Strategy<Value = (usize, usize, usize, usize, usize)> {
        prop_oneof![
            Just((3, 4, 5, 1, 1)),
            Just((4, 4, 4, 4, 4)),
            Just((4, 8, 8, 4, 8)),
            Just((6, 6, 4, 2, 1)),
            Just((4, 8, 4, 2, 4)),
            Just((2, 6, 3, 1, 3)),
        ]
    }

    const H: usize = 17;
    const W: usize = 14;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn an_unpadded_second_conv_composes_exactly(
            (c_in, c_mid, c_out, g1, g2) in channels(), first in geometry(true), second in geometry(false), seed in 0u64..1000
        ) {
            let mut rng = Rng::new(seed);
            let a = random_conv(&mut rng, c_in, c_mid, g1, first);
            let b = random_conv(&mut rng, c_mid, c_out, g2, second);
            prop_assume!(a.output_size(0, H).and_then(|h| b.output_size(0, h)).is_some());
            prop_assume!(a.output_size(1, W).and_then(|w| b.output_size(1, w)).is_some());
            let (folded, border) = compose(&a, &b).unwrap();
            prop_assert_eq!(border, Border::Exact);
            let error = max_relative_error(&chain_model(&[&a, &b], None), &chain_model(&[&folded], None), &[vec![2, c_in, H, W]], seed);
            prop_assert!(error <= 1e-4, "relative error {error}");
        }

        #[test]
        fn a_padded_second_conv_after_a_1x1_composes_exactly_with_a_bias_map(
            (c_in, c_mid, c_out, g1, g2) in channels(), second in geometry(true), seed in 0u64..1000
        ) {
            let mut rng = Rng::new(seed);
            let one = Geometry { kernel: [1, 1], stride: [1, 1], dilation: [1, 1], pads: [0; 4], bias: true };
            let a = random_conv(&mut rng, c_in, c_mid, g1, one);
            let b = random_conv(&mut rng, c_mid, c_out, g2, second);
            prop_assume!(b.output_size(0, H).is_some() && b.output_size(1, W).is_some() && b.is_padded());
            let (mut folded, border) = compose(&a, &b).unwrap();
            prop_assert_eq!(border, Border::BiasMap);
            let zeros = FeatureMap::uniform(&vec![0.0; c_in], [H, W]);
            let map = b.apply(&a.apply(&zeros).unwrap()).unwrap();
            folded.bias = vec![0.0; folded.out_channels];
            let before = chain_model(&[&a, &b], None);
            let after = chain_model(&[&folded], Some((&map.values, map.hw)));
            let error = max_relative_error(&before, &after, &[vec![2, c_in, H, W]], seed);
            prop_assert!(error <= 1e-4, "relative error {error}");
        }
    }

    /// x → a, x → b, Add(a, b) as a model.
    fn parallel_model(a: &Conv2d, b: &Conv2d) -> Model {
        let bias = |c: &Conv2d| {
            Tensor::from_f64(crate::ir::DataType::Float, vec![c.out_channels], &c.bias).unwrap()
        };
        let proto = ModelBuilder::new(13)
            .input("x", &[1, a.in_channels as i64, -1, -1])
            .initializer("wa", weight_tensor(a))
            .initializer("ba", bias(a))
            .initializer("wb", weight_tensor(b))
            .initializer("bb", bias(b))
            .node("Conv", &["x", "wa", "ba"], &["ya"], conv_node_attributes(a))
            .node("Conv", &["x", "wb", "bb"], &["yb"], conv_node_attributes(b))
            .node("Add", &["ya", "yb"], &["y"], Attributes::default())
            .output("y")
            .build();
        Model::from_proto(proto).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn parallel_branches_with_aligned_outputs_sum_exactly(
            (ka, kb) in (0..3usize, 0..3usize), (da, db) in (1..3usize, 1..3usize), stride in 1..3usize,
            extra in 0..2usize, groups in prop_oneof![Just((1, 1)), Just((4, 1)), Just((4, 4))], seed in 0u64..1000
        ) {
            // Same-padded odd kernels (plus `extra` padding on both sides of b and a
            // matching dilation-free shift) give equal output sizes.
            let (ka, kb) = (2 * ka + 1, 2 * kb + 1);
            let same = |k: usize, d: usize, extra: usize| {
                let p = d * (k - 1) / 2 + extra;
                Geometry { kernel: [k, k], stride: [stride; 2], dilation: [d, d], pads: [p; 4], bias: true }
            };
            let mut rng = Rng::new(seed);
            let a = random_conv(&mut rng, 4, 4, groups.0, same(ka, da, 0));
            let mut gb = same(kb + 2 * extra, db, 0);
            gb.pads = [db * (kb + 2 * extra - 1) / 2; 4];
            let b = random_conv(&mut rng, 4, 4, groups.1, gb);
            let summed = sum(&a, &b).unwrap();
            let error = max_relative_error(&parallel_model(&a, &b), &chain_model(&[&summed], None), &[vec![1, 4, H, W]], seed);
            prop_assert!(error <= 1e-4, "relative error {error}");
        }
    }

    #[test]
    fn a_residual_identity_lands_on_the_centre_tap() {
        let mut rng = Rng::new(8);
        let g = Geometry {
            pads: [1; 4],
            ..Geometry::plain(3, true)
        };
        let conv = random_conv(&mut rng, 4, 4, 1, g);
        let residual = sum(&Conv2d::identity(4), &conv).unwrap();
        assert_eq!(
            (residual.kernel, residual.pads, residual.group),
            ([3, 3], [1; 4], 1)
        );
        for c in 0..4 {
            assert_eq!(residual.tap(c, c, 1, 1), conv.tap(c, c, 1, 1) + 1.0);
        }
        let error = max_relative_error(
            &parallel_model(&Conv2d::identity(4), &conv),
            &chain_model(&[&residual], None),
            &[vec![1, 4, H, W]],
            8,
        );
        assert!(error <= 1e-4, "relative error {error}");
    }

    #[test]
    fn branches_of_different_output_sizes_do_not_sum() {
        let mut rng = Rng::new(9);
        let g = |pads| Geometry {
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            pads,
            bias: false,
        };
        let (a, b) = (
            random_conv(&mut rng, 2, 2, 1, g([1; 4])),
            random_conv(&mut rng, 2, 2, 1, g([0; 4])),
        );
        assert!(sum(&a, &b).is_none());
    }

    #[test]
    fn a_strided_first_conv_dilates_the_second_kernel() {
        let mut rng = Rng::new(3);
        let g = |kernel, stride| Geometry {
            kernel,
            stride,
            ..Geometry::plain(1, true)
        };
        let a = random_conv(&mut rng, 3, 4, 1, g([3, 3], [2, 2]));
        let b = random_conv(&mut rng, 4, 2, 1, g([3, 3], [1, 1]));
        let (folded, _) = compose(&a, &b).unwrap();
        // Extent 1·2 + 2·1·2 + 1 = 7 with gcd(1, 2) = 1: a 7×7 kernel of stride 2·1.
        assert_eq!(
            (folded.kernel, folded.stride, folded.dilation),
            ([7, 7], [2, 2], [1, 1])
        );
        let error = max_relative_error(
            &chain_model(&[&a, &b], None),
            &chain_model(&[&folded], None),
            &[vec![1, 3, H, W]],
            3,
        );
        assert!(error <= 1e-4, "relative error {error}");
    }

    #[test]
    fn dilations_with_a_common_factor_keep_it_as_the_composite_dilation() {
        let mut rng = Rng::new(4);
        let g = |dilation| Geometry {
            dilation,
            ..Geometry::plain(3, false)
        };
        let a = random_conv(&mut rng, 2, 2, 1, g([2, 2]));
        let b = random_conv(&mut rng, 2, 2, 1, g([2, 2]));
        let (folded, _) = compose(&a, &b).unwrap();
        // Offsets 2u + 2a are all even: a 5×5 kernel of dilation 2, not a sparse 9×9.
        assert_eq!((folded.kernel, folded.dilation), ([5, 5], [2, 2]));
    }

    #[test]
    fn depthwise_after_depthwise_stays_depthwise() {
        let mut rng = Rng::new(5);
        let g = Geometry::plain(3, true);
        let (a, b) = (
            random_conv(&mut rng, 6, 6, 6, g),
            random_conv(&mut rng, 6, 6, 6, g),
        );
        let (folded, _) = compose(&a, &b).unwrap();
        assert_eq!((folded.group, folded.weight.len()), (6, 6 * 25));
    }

    #[test]
    fn padded_after_padded_is_interior_only_and_differs_only_on_the_border_ring() {
        let mut rng = Rng::new(6);
        let g = Geometry {
            pads: [1; 4],
            ..Geometry::plain(3, true)
        };
        let (a, b) = (
            random_conv(&mut rng, 3, 4, 1, g),
            random_conv(&mut rng, 4, 3, 1, g),
        );
        let (folded, border) = compose(&a, &b).unwrap();
        assert_eq!(border, Border::InteriorOnly);
        let dims = vec![vec![1, 3, H, W]];
        let x = crate::calib::random::normal_array(&dims[0], &mut Rng::new(9));
        let run = |m: &Model| {
            crate::runtime::Session::new(m, &dims)
                .unwrap()
                .run(std::slice::from_ref(&x))
                .unwrap()
                .remove(0)
        };
        let (pair, single) = (
            run(&chain_model(&[&a, &b], None)),
            run(&chain_model(&[&folded], None)),
        );
        assert_eq!(pair.shape(), single.shape());
        let mut border_differs = false;
        for ((idx, p), s) in pair.indexed_iter().zip(single.iter()) {
            let (y, x) = (idx[2], idx[3]);
            // conv2's window reaches its padding only within 1 of the edge.
            let on_ring = y == 0 || x == 0 || y == H - 1 || x == W - 1;
            if on_ring {
                border_differs |= (p - s).abs() > 1e-3;
            } else {
                assert!(
                    (p - s).abs() <= 1e-4 * p.abs().max(1.0),
                    "interior ({y},{x}): {p} vs {s}"
                );
            }
        }
        assert!(border_differs, "a padded pair must differ on the border");
    }

    #[test]
    fn mismatched_channels_are_refused() {
        let mut rng = Rng::new(7);
        let g = Geometry::plain(1, false);
        let (a, b) = (
            random_conv(&mut rng, 3, 4, 1, g),
            random_conv(&mut rng, 5, 3, 1, g),
        );
        assert!(compose(&a, &b).is_err());
    }
}
