//! The element types the executor computes in: f32 for training, f64 so that tests can
//! check gradients against central differences. Matrix products go to `matrixmultiply`;
//! dot products and sums are added in lanes.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign, Neg, SubAssign};

use ndarray::{LinalgScalar, ScalarOperand};

pub trait Float:
    'static
    + LinalgScalar
    + ScalarOperand
    + PartialOrd
    + Debug
    + Default
    + Send
    + Sync
    + AddAssign
    + SubAssign
    + MulAssign
    + Neg<Output = Self>
    + Sum
{
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn tanh(self) -> Self;
    fn sqrt(self) -> Self;
    fn max(self, other: Self) -> Self;
    fn min(self, other: Self) -> Self;
    fn neg_infinity() -> Self;

    /// C ← α·A·B + β·C on raw strided matrices (`matrixmultiply`'s contract).
    ///
    /// # Safety
    /// Every element addressed through the dims and strides must lie inside its buffer.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: (*const Self, isize, isize),
        b: (*const Self, isize, isize),
        beta: Self,
        c: (*mut Self, isize, isize),
    );
}

macro_rules! impl_float {
    ($t:ty, $gemm:path) => {
        impl Float for $t {
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
            fn neg_infinity() -> Self {
                <$t>::NEG_INFINITY
            }
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: (*const Self, isize, isize),
                b: (*const Self, isize, isize),
                beta: Self,
                c: (*mut Self, isize, isize),
            ) {
                // SAFETY: forwarded from the caller's contract.
                unsafe {
                    $gemm(
                        m, k, n, alpha, a.0, a.1, a.2, b.0, b.1, b.2, beta, c.0, c.1, c.2,
                    )
                }
            }
        }
    };
}

impl_float!(f32, matrixmultiply::sgemm);
impl_float!(f64, matrixmultiply::dgemm);

/// A read-only matrix in a slice: `rows × cols` with non-negative element strides.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major matrix.
    pub(crate) fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    pub(crate) fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// The transpose when `transposed` is set.
    pub(crate) fn t_if(self, transposed: bool) -> Self {
        if transposed { self.t() } else { self }
    }
}

/// A writable matrix in a slice, as `Mat`.
pub(crate) struct MatMut<'a, T> {
    data: &'a mut [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> MatMut<'a, T> {
    pub(crate) fn new(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    pub(crate) fn t(self) -> Self {
        MatMut {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * row_stride + (cols - 1) * col_stride < len
}

/// C ← α·A·B + β·C (β = 0 overwrites C without reading it).
pub(crate) fn gemm<T: Float>(alpha: T, a: Mat<T>, b: Mat<T>, beta: T, c: MatMut<T>) {
    assert!(
        a.cols == b.rows && c.rows == a.rows && c.cols == b.cols,
        "gemm dims: {}x{} · {}x{} → {}x{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    assert!(fits(
        a.data.len(),
        a.rows,
        a.cols,
        a.row_stride,
        a.col_stride
    ));
    assert!(fits(
        b.data.len(),
        b.rows,
        b.cols,
        b.row_stride,
        b.col_stride
    ));
    assert!(fits(
        c.data.len(),
        c.rows,
        c.cols,
        c.row_stride,
        c.col_stride
    ));
    if c.rows == 0 || c.cols == 0 {
        return;
    }
    let raw = |m: &Mat<T>| {
        (
            m.data.as_ptr(),
            m.row_stride as isize,
            m.col_stride as isize,
        )
    };
    // SAFETY: the asserts above keep every addressed element inside its slice.
    unsafe {
        T::gemm_raw(
            a.rows,
            a.cols,
            b.cols,
            alpha,
            raw(&a),
            raw(&b),
            beta,
            (
                c.data.as_mut_ptr(),
                c.row_stride as isize,
                c.col_stride as isize,
            ),
        )
    }
}

/// Accumulators of a sum: term i goes to lane i mod 8, so consecutive terms do not wait on
/// each other (the loop vectorises) and the order is fixed (the result is reproducible).
pub(crate) const LANES: usize = 8;

/// Σ a[i]·b[i], summed in lanes.
pub(crate) fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    assert_eq!(a.len(), b.len());
    let mut lanes = [T::zero(); LANES];
    let (a8, b8) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a8.remainder(), b8.remainder());
    for (a, b) in a8.zip(b8) {
        for k in 0..LANES {
            lanes[k] += a[k] * b[k];
        }
    }
    for (k, (&a, &b)) in a_rest.iter().zip(b_rest).enumerate() {
        lanes[k] += a * b;
    }
    lanes.into_iter().sum()
}

/// Σ a[i], summed in lanes.
pub(crate) fn sum<T: Float>(a: &[T]) -> T {
    let mut lanes = [T::zero(); LANES];
    let a8 = a.chunks_exact(LANES);
    let rest = a8.remainder();
    for a in a8 {
        for k in 0..LANES {
            lanes[k] += a[k];
        }
    }
    for (k, &a) in rest.iter().enumerate() {
        lanes[k] += a;
    }
    lanes.into_iter().sum()
}
