//! Conv (1-D and 2-D, groups, stride, dilation, pads): im2col + GEMM per sample and group
//! (a 1×1 unpadded stride-1 conv multiplies the input directly), a direct loop for
//! depthwise convs. Samples run in parallel; weight gradients are partial sums over fixed
//! runs of samples added in order, so results do not depend on thread scheduling.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use super::window::{Span, spans};
use crate::exec::buffers::BufferPool;
use crate::exec::float::{Float, LANES, Mat, MatMut, dot, gemm, sum};
use crate::ir::window::Window;

/// Samples whose weight gradients one parallel task sums.
const SAMPLES_PER_TASK: usize = 4;

#[derive(Clone, Debug)]
pub(crate) struct Conv {
    pub window: Window,
}

/// A conv resolved against its input and weight dims (1-D convs as 2-D with height 1).
struct Geometry {
    batch: usize,
    channels: usize,
    outputs: usize,
    group: usize,
    h: Span,
    w: Span,
}

impl Geometry {
    fn group_channels(&self) -> usize {
        self.channels / self.group
    }
    fn group_outputs(&self) -> usize {
        self.outputs / self.group
    }
    fn in_plane(&self) -> usize {
        self.h.input * self.w.input
    }
    fn out_plane(&self) -> usize {
        self.h.output * self.w.output
    }
    fn taps(&self) -> usize {
        self.h.kernel * self.w.kernel
    }
    /// Rows of a group's im2col matrix (= columns of its weight matrix).
    fn patch(&self) -> usize {
        self.group_channels() * self.taps()
    }
    fn pointwise(&self) -> bool {
        [self.h, self.w]
            .iter()
            .all(|s| s.kernel == 1 && s.stride == 1 && s.pad_begin == 0 && s.pad_end == 0)
    }
    fn depthwise(&self) -> bool {
        self.group == self.channels && self.group_channels() == 1
    }

    /// Calls `f(tap, input offset, output offset, run)` for every row segment where tap
    /// `tap` of the kernel reads inside the input: outputs `out..out + run` (contiguous)
    /// read inputs `inp, inp + stride_w, …` of one channel plane.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        for i in 0..self.h.kernel {
            let (h_lo, h_hi) = self.h.valid_outputs(i);
            for j in 0..self.w.kernel {
                let (w_lo, w_hi) = self.w.valid_outputs(j);
                if w_lo >= w_hi {
                    continue;
                }
                for oh in h_lo..h_hi {
                    let ih = self.h.input_index(oh, i);
                    let iw = self.w.input_index(w_lo, j);
                    f(
                        i * self.w.kernel + j,
                        ih * self.w.input + iw,
                        oh * self.w.output + w_lo,
                        w_hi - w_lo,
                    );
                }
            }
        }
    }

    /// The im2col matrix [patch, out_plane] of one group's input planes.
    fn im2col<T: Float>(&self, x: &[T], col: &mut Vec<T>) {
        let (taps, plane) = (self.taps(), self.out_plane());
        col.clear();
        col.resize(self.patch() * plane, T::zero());
        for c in 0..self.group_channels() {
            let x = &x[c * self.in_plane()..][..self.in_plane()];
            let rows = &mut col[c * taps * plane..][..taps * plane];
            self.for_each_run(|tap, inp, out, run| {
                let dst = &mut rows[tap * plane + out..][..run];
                for (t, d) in dst.iter_mut().enumerate() {
                    *d = x[inp + t * self.w.stride];
                }
            });
        }
    }

    /// Adds the im2col-shaped gradient `col` back onto the group's input planes.
    fn col2im<T: Float>(&self, col: &[T], dx: &mut [T]) {
        let (taps, plane) = (self.taps(), self.out_plane());
        for c in 0..self.group_channels() {
            let dx = &mut dx[c * self.in_plane()..][..self.in_plane()];
            let rows = &col[c * taps * plane..][..taps * plane];
            self.for_each_run(|tap, inp, out, run| {
                scatter_axpy(
                    dx,
                    inp,
                    self.w.stride,
                    T::one(),
                    &rows[tap * plane + out..][..run],
                );
            });
        }
    }
}

/// `dst[off + t·stride] += a · src[t]`.
fn scatter_axpy<T: Float>(dst: &mut [T], off: usize, stride: usize, a: T, src: &[T]) {
    if stride == 1 {
        for (d, &s) in dst[off..][..src.len()].iter_mut().zip(src) {
            *d += a * s;
        }
    } else {
        for (t, &s) in src.iter().enumerate() {
            dst[off + t * stride] += a * s;
        }
    }
}

/// `dst[t] += a · src[off + t·stride]`.
fn gather_axpy<T: Float>(dst: &mut [T], a: T, src: &[T], off: usize, stride: usize) {
    if stride == 1 {
        let len = dst.len();
        for (d, &s) in dst.iter_mut().zip(&src[off..][..len]) {
            *d += a * s;
        }
    } else {
        for (t, d) in dst.iter_mut().enumerate() {
            *d += a * src[off + t * stride];
        }
    }
}

/// Σ a[t] · b[off + t·stride], summed in lanes.
fn strided_dot<T: Float>(a: &[T], b: &[T], off: usize, stride: usize) -> T {
    if stride == 1 {
        return dot(a, &b[off..][..a.len()]);
    }
    let mut lanes = [T::zero(); LANES];
    for (t, &a) in a.iter().enumerate() {
        lanes[t % LANES] += a * b[off + t * stride];
    }
    lanes.into_iter().sum()
}

/// Partial sums (computed in parallel) added in order; their buffers go back to the pool.
fn ordered_sum<T: Float>(pool: &BufferPool, partials: Vec<Vec<T>>) -> Vec<T> {
    let mut partials = partials.into_iter();
    let mut total = partials.next().expect("at least one partial sum");
    for p in partials {
        total.iter_mut().zip(&p).for_each(|(t, &p)| *t += p);
        pool.give(p);
    }
    total
}

fn data<T: Float>(a: &ArrayD<T>) -> &[T] {
    a.as_slice().expect("executor arrays are contiguous")
}

impl Conv {
    fn geometry(&self, x: &[usize], w: &[usize]) -> Result<Geometry, String> {
        if !(3..=4).contains(&x.len()) || w.len() != x.len() {
            return Err(format!(
                "only 1-D and 2-D convs: input {x:?}, weights {w:?}"
            ));
        }
        let spans = spans(&self.window, &x[2..], Some(&w[2..]))?;
        let (h, w_span) = match spans[..] {
            [w] => (Span::UNIT, w),
            [h, w] => (h, w),
            _ => unreachable!("rank checked"),
        };
        let (channels, outputs) = (x[1], w[0]);
        let group = self.window.group;
        if group == 0 || channels % group != 0 || outputs % group != 0 || w[1] * group != channels {
            return Err(format!(
                "input {x:?} and weights {w:?} do not fit group {group}"
            ));
        }
        Ok(Geometry {
            batch: x[0],
            channels,
            outputs,
            group,
            h,
            w: w_span,
        })
    }

    fn output_shape(&self, x: &[usize], g: &Geometry) -> Vec<usize> {
        let mut shape = vec![g.batch, g.outputs];
        if x.len() == 4 {
            shape.push(g.h.output);
        }
        shape.push(g.w.output);
        shape
    }

    pub(crate) fn forward<T: Float>(
        &self,
        pool: &BufferPool,
        x: &ArrayD<T>,
        w: &ArrayD<T>,
        b: Option<&ArrayD<T>>,
    ) -> Result<ArrayD<T>, String> {
        let geo = self.geometry(x.shape(), w.shape())?;
        if let Some(b) = b.filter(|b| b.len() != geo.outputs) {
            return Err(format!(
                "bias {:?} does not fit {} outputs",
                b.shape(),
                geo.outputs
            ));
        }
        let (w, b) = (data(w), b.map(data));
        let (in_len, out_len) = (geo.channels * geo.in_plane(), geo.outputs * geo.out_plane());
        let mut y = pool.take(geo.batch * out_len);
        if out_len > 0 && in_len > 0 {
            y.par_chunks_mut(out_len)
                .zip(data(x).par_chunks(in_len))
                .for_each_init(Vec::new, |col, (y, x)| geo.forward_sample(x, w, b, y, col));
        } else {
            y.fill(T::zero());
        }
        Ok(
            ArrayD::from_shape_vec(IxDyn(&self.output_shape(x.shape(), &geo)), y)
                .expect("output dims"),
        )
    }

    /// Gradients for x, W and b, each only when `need`ed.
    pub(crate) fn backward<T: Float>(
        &self,
        pool: &BufferPool,
        g: &ArrayD<T>,
        x: &ArrayD<T>,
        w: &ArrayD<T>,
        need: [bool; 3],
    ) -> [Option<ArrayD<T>>; 3] {
        let geo = self
            .geometry(x.shape(), w.shape())
            .expect("checked in forward");
        let (in_len, out_len) = (geo.channels * geo.in_plane(), geo.outputs * geo.out_plane());
        let (gd, xd, wd) = (data(g), data(x), data(w));
        let dx = need[0].then(|| {
            let mut dx = pool.take(geo.batch * in_len);
            if out_len > 0 && in_len > 0 {
                dx.par_chunks_mut(in_len)
                    .zip(gd.par_chunks(out_len))
                    .for_each_init(Vec::new, |col, (dx, g)| {
                        geo.input_grad_sample(g, wd, dx, col)
                    });
            } else {
                dx.fill(T::zero());
            }
            ArrayD::from_shape_vec(x.raw_dim(), dx).expect("input dims")
        });
        let dw = need[1].then(|| {
            let total = if out_len > 0 && in_len > 0 {
                let partials = gd
                    .par_chunks(SAMPLES_PER_TASK * out_len)
                    .zip(xd.par_chunks(SAMPLES_PER_TASK * in_len))
                    .map_init(Vec::new, |col, (g, x)| geo.weight_grad(pool, g, x, col))
                    .collect();
                ordered_sum(pool, partials)
            } else {
                vec![T::zero(); w.len()]
            };
            ArrayD::from_shape_vec(w.raw_dim(), total).expect("weight dims")
        });
        let db = need[2].then(|| {
            let mut db = vec![T::zero(); geo.outputs];
            for sample in gd.chunks(out_len.max(1)) {
                for (d, plane) in db.iter_mut().zip(sample.chunks(geo.out_plane().max(1))) {
                    *d += sum(plane);
                }
            }
            ArrayD::from_shape_vec(IxDyn(&[geo.outputs]), db).expect("bias dims")
        });
        [dx, dw, db]
    }
}

impl Geometry {
    /// Overwrites `y` (a pooled buffer): the accumulating depthwise path zeroes it first.
    fn forward_sample<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        b: Option<&[T]>,
        y: &mut [T],
        col: &mut Vec<T>,
    ) {
        let (ip, op, og) = (self.in_plane(), self.out_plane(), self.group_outputs());
        if self.depthwise() {
            y.fill(T::zero());
            for (o, y) in y.chunks_mut(op).enumerate() {
                let (x, w) = (
                    &x[(o / og) * ip..][..ip],
                    &w[o * self.taps()..][..self.taps()],
                );
                self.for_each_run(|tap, inp, out, run| {
                    gather_axpy(&mut y[out..][..run], w[tap], x, inp, self.w.stride);
                });
            }
        } else {
            let (cg, k) = (self.group_channels(), self.patch());
            for grp in 0..self.group {
                let xg = &x[grp * cg * ip..][..cg * ip];
                let cols: &[T] = if self.pointwise() {
                    xg
                } else {
                    self.im2col(xg, col);
                    col
                };
                let wg = Mat::new(&w[grp * og * k..][..og * k], og, k);
                let yg = MatMut::new(&mut y[grp * og * op..][..og * op], og, op);
                gemm(T::one(), wg, Mat::new(cols, k, op), T::zero(), yg);
            }
        }
        if let Some(b) = b {
            for (y, &b) in y.chunks_mut(op).zip(b) {
                y.iter_mut().for_each(|y| *y += b);
            }
        }
    }

    /// Overwrites `dx` (a pooled buffer): the accumulating paths zero it first.
    fn input_grad_sample<T: Float>(&self, g: &[T], w: &[T], dx: &mut [T], col: &mut Vec<T>) {
        let (ip, op, og) = (self.in_plane(), self.out_plane(), self.group_outputs());
        if self.depthwise() || !self.pointwise() {
            dx.fill(T::zero());
        }
        if self.depthwise() {
            for (o, g) in g.chunks(op).enumerate() {
                let (dx, w) = (
                    &mut dx[(o / og) * ip..][..ip],
                    &w[o * self.taps()..][..self.taps()],
                );
                self.for_each_run(|tap, inp, out, run| {
                    scatter_axpy(dx, inp, self.w.stride, w[tap], &g[out..][..run]);
                });
            }
            return;
        }
        let (cg, k) = (self.group_channels(), self.patch());
        for grp in 0..self.group {
            let wg = Mat::new(&w[grp * og * k..][..og * k], og, k).t();
            let gg = Mat::new(&g[grp * og * op..][..og * op], og, op);
            let dxg = &mut dx[grp * cg * ip..][..cg * ip];
            if self.pointwise() {
                gemm(T::one(), wg, gg, T::zero(), MatMut::new(dxg, k, op));
            } else {
                col.clear();
                col.resize(k * op, T::zero());
                gemm(T::one(), wg, gg, T::zero(), MatMut::new(col, k, op));
                self.col2im(col, dxg);
            }
        }
    }

    /// Σ over the samples of `g` and `x` of each sample's weight gradient.
    fn weight_grad<T: Float>(
        &self,
        pool: &BufferPool,
        g: &[T],
        x: &[T],
        col: &mut Vec<T>,
    ) -> Vec<T> {
        let (in_len, out_len) = (
            self.channels * self.in_plane(),
            self.outputs * self.out_plane(),
        );
        let mut dw = pool.take(self.outputs * self.patch());
        dw.fill(T::zero());
        for (g, x) in g.chunks(out_len).zip(x.chunks(in_len)) {
            self.add_weight_grad_sample(g, x, &mut dw, col);
        }
        dw
    }

    fn add_weight_grad_sample<T: Float>(&self, g: &[T], x: &[T], dw: &mut [T], col: &mut Vec<T>) {
        let (ip, op, og) = (self.in_plane(), self.out_plane(), self.group_outputs());
        let (cg, k) = (self.group_channels(), self.patch());
        if self.depthwise() {
            for (o, (g, dw)) in g.chunks(op).zip(dw.chunks_mut(k)).enumerate() {
                let x = &x[(o / og) * ip..][..ip];
                self.for_each_run(|tap, inp, out, run| {
                    dw[tap] += strided_dot(&g[out..][..run], x, inp, self.w.stride);
                });
            }
            return;
        }
        for grp in 0..self.group {
            let xg = &x[grp * cg * ip..][..cg * ip];
            let cols: &[T] = if self.pointwise() {
                xg
            } else {
                self.im2col(xg, col);
                col
            };
            let gg = Mat::new(&g[grp * og * op..][..og * op], og, op);
            let dwg = MatMut::new(&mut dw[grp * og * k..][..og * k], og, k);
            gemm(T::one(), gg, Mat::new(cols, k, op).t(), T::one(), dwg);
        }
    }
}
