//! MaxPool and AveragePool (1- to 3-D, pads, dilations, ceil_mode), GlobalAveragePool and
//! ReduceMean. A max pool's backward recomputes the arg-max from the saved input (the
//! first maximum in window order, as in the forward pass).

use ndarray::{ArrayD, Axis, IxDyn};
use rayon::prelude::*;

use super::normalize_axis;
use super::window::{Span, spans};
use crate::exec::float::Float;
use crate::ir::window::Window;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum PoolKind {
    Max,
    Average { count_pad: bool },
}

#[derive(Clone, Debug)]
pub(crate) struct Pool {
    pub kind: PoolKind,
    pub window: Window,
}

/// Per axis (depth, height, width), for each output index: the input indices its window
/// reads and the divisor that axis contributes.
struct Taps {
    spans: [Span; 3],
    axes: [Vec<(Vec<usize>, usize)>; 3],
}

impl Taps {
    fn new(spans: &[Span], count_pad: bool) -> Taps {
        let mut all = [Span::UNIT; 3];
        all[3 - spans.len()..].copy_from_slice(spans);
        let axes = all.map(|s| {
            (0..s.output)
                .map(|o| {
                    let (inside, padded) = s.taps(o);
                    let divisor = if count_pad { padded } else { inside.len() };
                    (inside, divisor)
                })
                .collect()
        });
        Taps { spans: all, axes }
    }

    fn in_plane(&self) -> usize {
        self.spans.iter().map(|s| s.input).product()
    }

    fn out_plane(&self) -> usize {
        self.spans.iter().map(|s| s.output).product()
    }

    /// Calls `f(output offset, input offsets of its window, divisor)` for every output.
    fn for_each_window(&self, mut f: impl FnMut(usize, &[usize], usize)) {
        let [_, h, w] = self.spans.map(|s| s.input);
        let mut window = Vec::new();
        let mut out = 0;
        for (zs, zd) in &self.axes[0] {
            for (ys, yd) in &self.axes[1] {
                for (xs, xd) in &self.axes[2] {
                    window.clear();
                    for &z in zs {
                        for &y in ys {
                            window.extend(xs.iter().map(|&x| (z * h + y) * w + x));
                        }
                    }
                    f(out, &window, zd * yd * xd);
                    out += 1;
                }
            }
        }
    }
}

fn first_max<T: Float>(x: &[T], window: &[usize]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for &i in window {
        if best.is_none_or(|b| x[i] > x[b]) {
            best = Some(i);
        }
    }
    best
}

impl Pool {
    fn taps(&self, shape: &[usize]) -> Result<Taps, String> {
        if !(3..=5).contains(&shape.len()) {
            return Err(format!("pools take 1-D to 3-D inputs, not {shape:?}"));
        }
        let spans = spans(&self.window, &shape[2..], None)?;
        let count_pad = matches!(self.kind, PoolKind::Average { count_pad: true });
        Ok(Taps::new(&spans, count_pad))
    }

    pub(crate) fn forward<T: Float>(&self, x: &ArrayD<T>) -> Result<ArrayD<T>, String> {
        let taps = self.taps(x.shape())?;
        let (ip, op) = (taps.in_plane(), taps.out_plane());
        let mut shape = x.shape()[..2].to_vec();
        shape.extend(taps.spans[3 - (x.ndim() - 2)..].iter().map(|s| s.output));
        let mut y = vec![T::zero(); x.shape()[..2].iter().product::<usize>() * op];
        let xs = x.as_slice().expect("contiguous");
        if ip > 0 && op > 0 {
            y.par_chunks_mut(op)
                .zip(xs.par_chunks(ip))
                .for_each(|(y, x)| {
                    taps.for_each_window(|o, window, divisor| {
                        y[o] = match self.kind {
                            PoolKind::Max => {
                                first_max(x, window).map_or(T::neg_infinity(), |i| x[i])
                            }
                            PoolKind::Average { .. } => {
                                window.iter().map(|&i| x[i]).sum::<T>()
                                    / T::from_f64(divisor as f64)
                            }
                        }
                    });
                });
        }
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), y).expect("output dims"))
    }

    /// The input gradient; a max pool needs the saved input `x`.
    pub(crate) fn backward<T: Float>(
        &self,
        g: &ArrayD<T>,
        x: Option<&ArrayD<T>>,
        shape: &[usize],
    ) -> ArrayD<T> {
        let taps = self.taps(shape).expect("checked in forward");
        let (ip, op) = (taps.in_plane(), taps.out_plane());
        let mut dx = vec![T::zero(); shape.iter().product()];
        let gs = g.as_slice().expect("contiguous");
        let planes = dx
            .par_chunks_mut(ip.max(1))
            .zip(gs.par_chunks(op.max(1)))
            .enumerate();
        planes.for_each(|(p, (dx, g))| {
            taps.for_each_window(|o, window, divisor| match self.kind {
                PoolKind::Max => {
                    let x = x
                        .expect("MaxPool saves its input")
                        .as_slice()
                        .expect("contiguous");
                    if let Some(i) = first_max(&x[p * ip..][..ip], window) {
                        dx[i] += g[o];
                    }
                }
                PoolKind::Average { .. } => {
                    let share = g[o] / T::from_f64(divisor as f64);
                    window.iter().for_each(|&i| dx[i] += share);
                }
            });
        });
        ArrayD::from_shape_vec(IxDyn(shape), dx).expect("input dims")
    }
}

/// Which axes a mean reduces.
#[derive(Clone, Debug)]
pub(crate) enum MeanAxes {
    Listed(Vec<i64>),
    All,
    /// ReduceMean with empty axes and `noop_with_empty_axes`.
    Nothing,
    /// Every axis after the first two (GlobalAveragePool).
    Spatial,
}

/// ReduceMean, and GlobalAveragePool as the mean over the spatial axes.
#[derive(Clone, Debug)]
pub(crate) struct ReduceMean {
    pub axes: MeanAxes,
    pub keepdims: bool,
}

impl ReduceMean {
    /// The reduced axes, ascending.
    fn axes(&self, rank: usize) -> Result<Vec<usize>, String> {
        let mut axes = match &self.axes {
            MeanAxes::Listed(a) => a
                .iter()
                .map(|&a| normalize_axis(a, rank))
                .collect::<Result<Vec<_>, _>>()?,
            MeanAxes::All => (0..rank).collect(),
            MeanAxes::Nothing => Vec::new(),
            MeanAxes::Spatial if rank >= 3 => (2..rank).collect(),
            MeanAxes::Spatial => return Err(format!("needs [N, C, spatial…], got rank {rank}")),
        };
        axes.sort_unstable();
        axes.dedup();
        Ok(axes)
    }

    fn kept_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
        shape
            .iter()
            .enumerate()
            .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
            .collect()
    }

    pub(crate) fn forward<T: Float>(&self, x: &ArrayD<T>) -> Result<ArrayD<T>, String> {
        let axes = self.axes(x.ndim())?;
        let count: usize = axes.iter().map(|&a| x.shape()[a]).product();
        let mut y = x.clone();
        for &a in axes.iter().rev() {
            y = y.sum_axis(Axis(a));
        }
        y.mapv_inplace(|v| v / T::from_f64(count as f64));
        let kept = if self.keepdims {
            Self::kept_shape(x.shape(), &axes)
        } else {
            y.shape().to_vec()
        };
        Ok(y.into_shape_with_order(IxDyn(&kept)).expect("same count"))
    }

    pub(crate) fn backward<T: Float>(&self, g: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
        let axes = self.axes(shape.len()).expect("checked in forward");
        let count: usize = axes.iter().map(|&a| shape[a]).product();
        let kept = g
            .to_shape(Self::kept_shape(shape, &axes))
            .expect("same count");
        let scale = T::one() / T::from_f64(count as f64);
        kept.broadcast(IxDyn(shape))
            .expect("kept dims broadcast")
            .mapv(|g| g * scale)
    }
}
