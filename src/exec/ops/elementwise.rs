//! Add, Sub, Mul and Div with multidirectional broadcasting, and the element-wise
//! helpers the other ops share (parallel maps over contiguous data, un-broadcasting).

use ndarray::{ArrayD, Axis, IxDyn, Zip};
use rayon::prelude::*;

use crate::exec::buffers::BufferPool;
use crate::exec::float::{Float, LANES};

/// Elements per parallel task: large enough that scheduling costs nothing.
const CHUNK: usize = 1 << 15;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

impl Binary {
    fn apply<T: Float>(self, a: T, b: T) -> T {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
        }
    }

    pub(crate) fn forward<T: Float>(
        self,
        pool: &BufferPool,
        a: &ArrayD<T>,
        b: &ArrayD<T>,
    ) -> Result<ArrayD<T>, String> {
        if a.shape() == b.shape() {
            return Ok(zip_map(pool, a, b, |x, y| self.apply(x, y)));
        }
        let shape = broadcast_shape(a.shape(), b.shape())?;
        let (a, b) = (
            a.broadcast(shape.clone()).unwrap(),
            b.broadcast(shape.clone()).unwrap(),
        );
        let mut out = ArrayD::zeros(shape);
        Zip::from(&mut out)
            .and(&a)
            .and(&b)
            .for_each(|o, &x, &y| *o = self.apply(x, y));
        Ok(out)
    }

    /// Gradients for the inputs that `need` them; Mul and Div read their saved inputs.
    pub(crate) fn backward<'a, T: Float>(
        self,
        pool: &BufferPool,
        g: &ArrayD<T>,
        a: Option<&'a ArrayD<T>>,
        b: Option<&'a ArrayD<T>>,
        shapes: [&[usize]; 2],
        need: [bool; 2],
    ) -> [Option<ArrayD<T>>; 2] {
        let saved = |x: Option<&'a ArrayD<T>>| x.expect("Mul/Div save their inputs");
        let da = need[0].then(|| {
            let full = match self {
                Binary::Add | Binary::Sub => map(pool, g, |g| g),
                Binary::Mul => broadcast_mul(pool, g, saved(b), |g, b| g * b),
                Binary::Div => broadcast_mul(pool, g, saved(b), |g, b| g / b),
            };
            unbroadcast(full, shapes[0])
        });
        let db = need[1].then(|| {
            let full = match self {
                Binary::Add => map(pool, g, |g| g),
                Binary::Sub => map(pool, g, |g| -g),
                Binary::Mul => broadcast_mul(pool, g, saved(a), |g, a| g * a),
                Binary::Div => {
                    let (a, b) = (saved(a), saved(b));
                    let ab = self
                        .forward(pool, a, &map(pool, b, |b| b * b))
                        .expect("shapes checked in forward");
                    broadcast_mul(pool, g, &ab, |g, q| -g * q)
                }
            };
            unbroadcast(full, shapes[1])
        });
        [da, db]
    }
}

/// `f(g, x)` with `x` broadcast to `g`'s shape.
fn broadcast_mul<T: Float>(
    pool: &BufferPool,
    g: &ArrayD<T>,
    x: &ArrayD<T>,
    f: impl Fn(T, T) -> T + Sync,
) -> ArrayD<T> {
    if g.shape() == x.shape() {
        return zip_map(pool, g, x, f);
    }
    let x = x.broadcast(g.raw_dim()).expect("a broadcast operand");
    let mut out = g.clone();
    Zip::from(&mut out).and(&x).for_each(|o, &x| *o = f(*o, x));
    out
}

/// The numpy broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// Sums a gradient of the broadcast shape back to an operand's `shape`.
pub(crate) fn unbroadcast<T: Float>(mut g: ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    while g.ndim() > shape.len() {
        g = g.sum_axis(Axis(0));
    }
    for (axis, &d) in shape.iter().enumerate() {
        if d == 1 && g.shape()[axis] != 1 {
            g = g.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    g
}

/// A contiguous slice of the array's elements in logical order (copying only if needed).
fn elements<T: Float>(x: &ArrayD<T>) -> std::borrow::Cow<'_, [T]> {
    match x.as_slice() {
        Some(s) => s.into(),
        None => x.iter().copied().collect::<Vec<_>>().into(),
    }
}

/// `f` applied to every element, in parallel.
pub(crate) fn map<T: Float>(
    pool: &BufferPool,
    x: &ArrayD<T>,
    f: impl Fn(T) -> T + Sync,
) -> ArrayD<T> {
    let src = elements(x);
    let mut out = pool.take(src.len());
    out.par_chunks_mut(CHUNK)
        .zip(src.par_chunks(CHUNK))
        .for_each(|(o, s)| o.iter_mut().zip(s).for_each(|(o, &s)| *o = f(s)));
    ArrayD::from_shape_vec(IxDyn(x.shape()), out).expect("same element count")
}

/// `f` applied to pairs of elements of two equally shaped arrays, in parallel.
pub(crate) fn zip_map<T: Float>(
    pool: &BufferPool,
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    f: impl Fn(T, T) -> T + Sync,
) -> ArrayD<T> {
    assert_eq!(a.shape(), b.shape());
    let (sa, sb) = (elements(a), elements(b));
    let mut out = pool.take(sa.len());
    out.par_chunks_mut(CHUNK)
        .zip(sa.par_chunks(CHUNK).zip(sb.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        });
    ArrayD::from_shape_vec(IxDyn(a.shape()), out).expect("same element count")
}

/// Σ f(a, b) over pairs of elements, as f64: per-chunk partial sums added in chunk order,
/// so the result does not depend on thread scheduling.
pub(crate) fn zip_sum<T: Float>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    f: impl Fn(T, T) -> f64 + Sync,
) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let (sa, sb) = (elements(a), elements(b));
    let partials: Vec<f64> = sa
        .par_chunks(CHUNK)
        .zip(sb.par_chunks(CHUNK))
        .map(|(a, b)| {
            let mut lanes = [0.0; LANES];
            let (mut a8, mut b8) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
            for (a, b) in (&mut a8).zip(&mut b8) {
                for k in 0..LANES {
                    lanes[k] += f(a[k], b[k]);
                }
            }
            for (k, (&a, &b)) in a8.remainder().iter().zip(b8.remainder()).enumerate() {
                lanes[k] += f(a, b);
            }
            lanes.iter().sum::<f64>()
        })
        .collect();
    partials.iter().sum()
}

/// `f` applied to pairs of elements, giving an array and Σ of an f64 per pair (summed as
/// `zip_sum` sums).
pub(crate) fn zip_map_sum<T: Float>(
    pool: &BufferPool,
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    f: impl Fn(T, T) -> (T, f64) + Sync,
) -> (ArrayD<T>, f64) {
    assert_eq!(a.shape(), b.shape());
    let (sa, sb) = (elements(a), elements(b));
    let mut out = pool.take(sa.len());
    let partials: Vec<f64> = out
        .par_chunks_mut(CHUNK)
        .zip(sa.par_chunks(CHUNK).zip(sb.par_chunks(CHUNK)))
        .map(|(o, (a, b))| {
            let mut lanes = [0.0; LANES];
            let mut o8 = o.chunks_exact_mut(LANES);
            let (mut a8, mut b8) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
            for ((o, a), b) in (&mut o8).zip(&mut a8).zip(&mut b8) {
                for k in 0..LANES {
                    let (v, s) = f(a[k], b[k]);
                    o[k] = v;
                    lanes[k] += s;
                }
            }
            let rest = o8.into_remainder().iter_mut();
            for (k, ((o, &a), &b)) in rest.zip(a8.remainder()).zip(b8.remainder()).enumerate() {
                let (v, s) = f(a, b);
                *o = v;
                lanes[k] += s;
            }
            lanes.iter().sum::<f64>()
        })
        .collect();
    let array = ArrayD::from_shape_vec(IxDyn(a.shape()), out).expect("same element count");
    (array, partials.iter().sum())
}

/// `acc += x`, in parallel.
pub(crate) fn add_assign<T: Float>(acc: &mut ArrayD<T>, x: &ArrayD<T>) {
    match (acc.as_slice_mut(), x.as_slice()) {
        (Some(acc), Some(x)) if acc.len() == x.len() => acc
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, &x)| *a += x)),
        _ => *acc += x,
    }
}
