//! The gate on an activation: y' = (1 − α)·y + α·x, where x and y are the activation's
//! input and output. α = 0 keeps the activation, α = 1 removes it.

use ndarray::ArrayD;

use super::buffers::BufferPool;
use super::float::Float;
use super::ops::{Kernel, Pointwise, Unary, map, zip_map, zip_map_sum, zip_sum};

pub(crate) fn forward<T: Float>(
    pool: &BufferPool,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
    alpha: T,
) -> Result<ArrayD<T>, String> {
    if x.shape() != y.shape() {
        return Err(format!(
            "input {:?} and output {:?} differ in shape",
            x.shape(),
            y.shape()
        ));
    }
    let keep = T::one() - alpha;
    Ok(zip_map(pool, x, y, |x, y| keep * y + alpha * x))
}

/// Gradients for x and y (when needed) and for α: ∂L/∂α = Σ g·(x − y).
pub(crate) fn backward<T: Float>(
    pool: &BufferPool,
    g: &ArrayD<T>,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
    alpha: T,
    need: [bool; 2],
) -> ([Option<ArrayD<T>>; 2], f64) {
    let dx = need[0].then(|| map(pool, g, |g| g * alpha));
    let dy = need[1].then(|| map(pool, g, |g| g * (T::one() - alpha)));
    let difference = zip_map(pool, x, y, |x, y| x - y);
    let dalpha = zip_sum(g, &difference, |g, d| g.to_f64() * d.to_f64());
    pool.give_array(difference);
    ([dx, dy], dalpha)
}

/// A gate fused with the single-node activation it wraps, one pass each way:
/// y' = (1 − α)·f(x) + α·x.
pub(crate) fn activation_forward<T: Float>(
    pool: &BufferPool,
    unary: Unary,
    x: &ArrayD<T>,
    alpha: T,
) -> ArrayD<T> {
    unary.dispatch(GatedForward { pool, x, alpha })
}

/// ∂L/∂x = g·((1 − α)·f′(x) + α) when needed, and ∂L/∂α = Σ g·(x − f(x)).
pub(crate) fn activation_backward<T: Float>(
    pool: &BufferPool,
    unary: Unary,
    g: &ArrayD<T>,
    x: &ArrayD<T>,
    alpha: T,
    need_x: bool,
) -> (Option<ArrayD<T>>, f64) {
    unary.dispatch(GatedBackward {
        pool,
        g,
        x,
        alpha,
        need_x,
    })
}

struct GatedForward<'a, T> {
    pool: &'a BufferPool,
    x: &'a ArrayD<T>,
    alpha: T,
}

impl<T: Float> Kernel<T> for GatedForward<'_, T> {
    type Out = ArrayD<T>;
    fn run<P: Pointwise<T>>(self, p: P) -> ArrayD<T> {
        let (alpha, keep) = (self.alpha, T::one() - self.alpha);
        map(self.pool, self.x, |x| keep * p.value(x) + alpha * x)
    }
}

struct GatedBackward<'a, T> {
    pool: &'a BufferPool,
    g: &'a ArrayD<T>,
    x: &'a ArrayD<T>,
    alpha: T,
    need_x: bool,
}

impl<T: Float> Kernel<T> for GatedBackward<'_, T> {
    type Out = (Option<ArrayD<T>>, f64);
    fn run<P: Pointwise<T>>(self, p: P) -> Self::Out {
        let (alpha, keep) = (self.alpha, T::one() - self.alpha);
        let dalpha = |g: T, x: T| g.to_f64() * (x - p.value(x)).to_f64();
        if !self.need_x {
            return (None, zip_sum(self.g, self.x, dalpha));
        }
        let (dx, da) = zip_map_sum(self.pool, self.g, self.x, |g, x| {
            (g * (keep * p.derivative(x) + alpha), dalpha(g, x))
        });
        (Some(dx), da)
    }
}
