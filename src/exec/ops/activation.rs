//! Element-wise activations (their derivative is taken at the saved input), PRelu and
//! Softmax (whose backward reads the saved output).

use ndarray::{ArrayD, Axis, Zip};

use super::elementwise::{broadcast_shape, map, unbroadcast, zip_map};
use crate::exec::buffers::BufferPool;
use crate::exec::float::Float;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Unary {
    Relu,
    Clip { min: f64, max: f64 },
    LeakyRelu { alpha: f64 },
    HardSigmoid { alpha: f64, beta: f64 },
    HardSwish,
    Sigmoid,
    Tanh,
}

/// An activation's value and derivative, its constants already in `T`, so that each
/// activation gets its own vectorisable loop (see `Unary::dispatch`).
pub(crate) trait Pointwise<T>: Copy + Send + Sync {
    fn value(self, x: T) -> T;
    fn derivative(self, x: T) -> T;
}

/// A loop over tensors, instantiated for one activation.
pub(crate) trait Kernel<T: Float> {
    type Out;
    fn run<P: Pointwise<T>>(self, p: P) -> Self::Out;
}

#[derive(Clone, Copy)]
struct Relu;
#[derive(Clone, Copy)]
struct Clip<T>(T, T);
#[derive(Clone, Copy)]
struct LeakyRelu<T>(T);
#[derive(Clone, Copy)]
struct HardSigmoid<T>(T, T);
#[derive(Clone, Copy)]
struct HardSwish;
#[derive(Clone, Copy)]
struct Sigmoid;
#[derive(Clone, Copy)]
struct Tanh;

fn step<T: Float>(inside: bool, slope: T) -> T {
    if inside { slope } else { T::zero() }
}

impl<T: Float> Pointwise<T> for Relu {
    fn value(self, x: T) -> T {
        x.max(T::zero())
    }
    fn derivative(self, x: T) -> T {
        step(x > T::zero(), T::one())
    }
}

impl<T: Float> Pointwise<T> for Clip<T> {
    /// min(max(x, lo), hi): every value becomes `hi` when lo > hi, as ONNX says.
    fn value(self, x: T) -> T {
        x.max(self.0).min(self.1)
    }
    fn derivative(self, x: T) -> T {
        step(x > self.0 && x < self.1, T::one())
    }
}

impl<T: Float> Pointwise<T> for LeakyRelu<T> {
    fn value(self, x: T) -> T {
        if x >= T::zero() { x } else { self.0 * x }
    }
    fn derivative(self, x: T) -> T {
        if x >= T::zero() { T::one() } else { self.0 }
    }
}

impl<T: Float> Pointwise<T> for HardSigmoid<T> {
    fn value(self, x: T) -> T {
        (self.0 * x + self.1).max(T::zero()).min(T::one())
    }
    fn derivative(self, x: T) -> T {
        let z = self.0 * x + self.1;
        step(z > T::zero() && z < T::one(), self.0)
    }
}

impl<T: Float> Pointwise<T> for HardSwish {
    fn value(self, x: T) -> T {
        x * HardSigmoid(T::from_f64(1.0 / 6.0), T::from_f64(0.5)).value(x)
    }
    fn derivative(self, x: T) -> T {
        let three = T::from_f64(3.0);
        if x >= three {
            T::one()
        } else {
            step(x > -three, x / three + T::from_f64(0.5))
        }
    }
}

impl<T: Float> Pointwise<T> for Sigmoid {
    fn value(self, x: T) -> T {
        T::one() / (T::one() + (-x).exp())
    }
    fn derivative(self, x: T) -> T {
        let s = self.value(x);
        s * (T::one() - s)
    }
}

impl<T: Float> Pointwise<T> for Tanh {
    fn value(self, x: T) -> T {
        x.tanh()
    }
    fn derivative(self, x: T) -> T {
        let t = x.tanh();
        T::one() - t * t
    }
}

struct Forward<'a, T>(&'a BufferPool, &'a ArrayD<T>);

impl<T: Float> Kernel<T> for Forward<'_, T> {
    type Out = ArrayD<T>;
    fn run<P: Pointwise<T>>(self, p: P) -> ArrayD<T> {
        map(self.0, self.1, |x| p.value(x))
    }
}

struct Backward<'a, T>(&'a BufferPool, &'a ArrayD<T>, &'a ArrayD<T>);

impl<T: Float> Kernel<T> for Backward<'_, T> {
    type Out = ArrayD<T>;
    fn run<P: Pointwise<T>>(self, p: P) -> ArrayD<T> {
        zip_map(self.0, self.1, self.2, |g, x| g * p.derivative(x))
    }
}

impl Unary {
    /// Runs `kernel` instantiated for this activation.
    pub(crate) fn dispatch<T: Float, K: Kernel<T>>(self, kernel: K) -> K::Out {
        let f = T::from_f64;
        match self {
            Unary::Relu => kernel.run(Relu),
            Unary::Clip { min, max } => kernel.run(Clip(f(min), f(max))),
            Unary::LeakyRelu { alpha } => kernel.run(LeakyRelu(f(alpha))),
            Unary::HardSigmoid { alpha, beta } => kernel.run(HardSigmoid(f(alpha), f(beta))),
            Unary::HardSwish => kernel.run(HardSwish),
            Unary::Sigmoid => kernel.run(Sigmoid),
            Unary::Tanh => kernel.run(Tanh),
        }
    }

    pub(crate) fn forward<T: Float>(self, pool: &BufferPool, x: &ArrayD<T>) -> ArrayD<T> {
        self.dispatch(Forward(pool, x))
    }

    pub(crate) fn backward<T: Float>(
        self,
        pool: &BufferPool,
        g: &ArrayD<T>,
        x: &ArrayD<T>,
    ) -> ArrayD<T> {
        self.dispatch(Backward(pool, g, x))
    }
}

/// y = x for x ≥ 0, slope·x otherwise; the slope broadcasts to x.
pub(crate) fn prelu_forward<T: Float>(
    x: &ArrayD<T>,
    slope: &ArrayD<T>,
) -> Result<ArrayD<T>, String> {
    let slope = broadcast_to(slope, x.shape())?;
    let mut y = x.clone();
    Zip::from(&mut y)
        .and(&slope)
        .for_each(|y, &s| *y = if *y >= T::zero() { *y } else { s * *y });
    Ok(y)
}

pub(crate) fn prelu_backward<T: Float>(
    pool: &BufferPool,
    g: &ArrayD<T>,
    x: &ArrayD<T>,
    slope: &ArrayD<T>,
    need: [bool; 2],
) -> [Option<ArrayD<T>>; 2] {
    let wide = broadcast_to(slope, x.shape()).expect("checked in forward");
    let dx = need[0].then(|| {
        let mut dx = g.clone();
        Zip::from(&mut dx).and(x).and(&wide).for_each(|d, &x, &s| {
            if x < T::zero() {
                *d *= s
            }
        });
        dx
    });
    let ds = need[1].then(|| {
        let full = zip_map(
            pool,
            g,
            x,
            |g, x| if x < T::zero() { g * x } else { T::zero() },
        );
        unbroadcast(full, slope.shape())
    });
    [dx, ds]
}

fn broadcast_to<'a, T: Float>(
    slope: &'a ArrayD<T>,
    shape: &[usize],
) -> Result<ndarray::ArrayViewD<'a, T>, String> {
    if broadcast_shape(shape, slope.shape())? != shape {
        return Err(format!(
            "slope {:?} does not broadcast to {shape:?}",
            slope.shape()
        ));
    }
    Ok(slope.broadcast(shape).expect("checked broadcast"))
}

/// Softmax over `axis`; before opset 13 over all axes from `axis` on (the input seen as 2-D).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Softmax {
    pub axis: i64,
    pub flatten: bool,
}

impl Softmax {
    /// The input seen as [outer, len, inner] with the softmax over `len`.
    fn view3(&self, shape: &[usize]) -> Result<[usize; 3], String> {
        let axis = super::normalize_axis(self.axis, shape.len())?;
        let outer = shape[..axis].iter().product();
        if self.flatten {
            return Ok([outer, shape[axis..].iter().product(), 1]);
        }
        Ok([outer, shape[axis], shape[axis + 1..].iter().product()])
    }

    pub(crate) fn forward<T: Float>(&self, x: &ArrayD<T>) -> Result<ArrayD<T>, String> {
        let dims = self.view3(x.shape())?;
        let mut y = x.as_standard_layout().into_owned();
        let mut y3 = y
            .view_mut()
            .into_shape_with_order(dims)
            .expect("contiguous");
        for mut lane in y3.lanes_mut(Axis(1)) {
            let top = lane.fold(T::neg_infinity(), |m, &v| m.max(v));
            lane.mapv_inplace(|v| (v - top).exp());
            let total: T = lane.sum();
            lane.mapv_inplace(|v| v / total);
        }
        Ok(y)
    }

    /// dx = y ⊙ (g − Σ g⊙y) along the softmax axis.
    pub(crate) fn backward<T: Float>(
        &self,
        pool: &BufferPool,
        g: &ArrayD<T>,
        y: &ArrayD<T>,
    ) -> ArrayD<T> {
        let dims = self.view3(y.shape()).expect("checked in forward");
        let mut dx = zip_map(pool, g, y, |g, y| g * y);
        let mut d3 = dx
            .view_mut()
            .into_shape_with_order(dims)
            .expect("contiguous");
        let y3 = y.view().into_shape_with_order(dims).expect("contiguous");
        for (mut d, y) in d3.lanes_mut(Axis(1)).into_iter().zip(y3.lanes(Axis(1))) {
            let dot: T = d.sum();
            d.zip_mut_with(&y, |d, &y| *d -= y * dot);
        }
        dx
    }
}
